"""Typed settings, and the one documented place each value comes from.

Precedence, lowest first: built-in defaults, the TOML file (``$HTPDATA_CONFIG``, else
``$XDG_CONFIG_HOME/htpdata/config.toml``), environment variables ``HTPDATA_<SECTION>_<KEY>``
(e.g. ``HTPDATA_TIMEOUTS_CONNECT=5``; lists separated by ``,``, except ``catalogs.path`` which
is ``:``-separated like ``PATH``), then keyword arguments to
:func:`load_settings`. Nothing is read at import time. ``htpdata config`` prints every value and
where it came from.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = [
    "AuthSettings",
    "ByteSize",
    "CacheSettings",
    "CatalogSettings",
    "Duration",
    "ReplicaSettings",
    "RucioSettings",
    "Settings",
    "TimeoutSettings",
    "config_path",
    "default_local_dir",
    "env_variable",
    "list_separator",
    "load_settings",
]


@dataclass(frozen=True)
class TimeoutSettings:
    """Seconds. Never infinite: a server that stops answering fails over instead of hanging."""

    connect: float = 10.0
    """Opening a connection or a file on one replica."""
    read: float = 60.0
    """One request (a read, a vector read, a stat) without an answer."""


class ByteSize(int):
    """A number of bytes; settings accept ``2GB``, ``512MiB``, ``1.5TB`` or a plain integer."""

    _UNITS: ClassVar[dict[str, int]] = {
        "": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2,
              "g": 1000**3, "gb": 1000**3, "t": 1000**4, "tb": 1000**4, "p": 1000**5,
              "pb": 1000**5, "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
              "pib": 1024**5}

    @classmethod
    def parse(cls, value: object) -> ByteSize:
        if isinstance(value, bool):
            raise ValueError(f"expected a size such as 20GB, got {value!r}")
        if isinstance(value, int | float):
            number, unit = float(value), ""
        elif isinstance(value, str):
            m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?)\s*([A-Za-z]*)\s*", value)
            if m is None or m.group(2).lower() not in cls._UNITS:
                raise ValueError(f"expected a size such as 20GB or 512MiB, got {value!r}")
            number, unit = float(m.group(1)), m.group(2).lower()
        else:
            raise ValueError(f"expected a size such as 20GB, got {value!r}")
        if number < 0:
            raise ValueError(f"must not be negative, got {value!r}")
        return cls(int(number * cls._UNITS[unit]))


@dataclass(frozen=True)
class ReplicaSettings:
    """How replicas are ordered (see :mod:`htpdata.replicas`)."""

    protocols: tuple[str, ...] = ("root", "davs", "https", "http", "file")
    """Protocols in order of preference; others are not used."""
    prefer_sites: tuple[str, ...] = ()
    """Site name patterns (``T2_IT_*``) tried first, in this order, before catalog preference."""
    allow_sites: tuple[str, ...] = ()
    """If set, only sites matching one of these patterns are used."""
    block_sites: tuple[str, ...] = ()
    """Sites matching these patterns are never used."""
    proxy: str = ""
    """The site's XCache, used first for every file (``root://xcache.site:1094//``; an
    ``https://`` one serves davs:// and https:// replicas too); empty: none. See
    :mod:`htpdata.transports.proxy`."""
    proxy_mode: str = "path"
    """``path``: ask the proxy for the file's path (its ``pss.origin`` is the site's origin);
    ``forward``: for the whole replica URL (an XCache in forwarding mode)."""
    proxy_timeout: float = 10.0
    """Seconds a proxy request may go unanswered before the read moves to the direct
    replicas (and the proxy is bypassed)."""
    proxy_failures: int = 2
    """Consecutive proxy failures (other than timeouts) that make it bypassed."""
    proxy_retry: float = 60.0
    """Seconds a bypassed proxy is left alone before it is tried again (doubling, up to 16x,
    while it keeps failing)."""
    slow_floor: ByteSize = ByteSize(100 * 1000)
    """Bytes per second below which a replica is left for the next one (at the same offset)
    when there is a next one; 0 switches the rule off. See :mod:`htpdata.hedging`."""
    slow_window: float = 10.0
    """Seconds every request is given at least before it is judged against the floor."""
    slow_ramp_up: float = 5.0
    """Extra seconds for the first request to a replica (opening, TLS, TCP slow start)."""
    hedge: bool = True
    """Ask a second replica for a file's first bytes when the first is slower than usual (at
    most one hedge in flight per file)."""
    hedge_min: float = 0.05
    """Shortest wait, in seconds, before the hedge is sent."""
    hedge_max: float = 1.0
    """Longest wait before the hedge (and the wait before any latency was observed)."""


class Duration(float):
    """Seconds; settings accept ``7d``, ``12h``, ``30m``, ``90s``, ``2w``, ``1y`` (365 days)
    or a plain number."""

    _UNITS: ClassVar[dict[str, int]] = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400,
                                         "w": 7 * 86400, "y": 365 * 86400}

    @classmethod
    def parse(cls, value: object) -> Duration:
        if isinstance(value, bool):
            raise ValueError(f"expected a duration such as 7d or 12h, got {value!r}")
        if isinstance(value, int | float):
            number, unit = float(value), ""
        elif isinstance(value, str):
            m = re.fullmatch(r"\s*(\d+(?:\.\d*)?)\s*([smhdwy]?)\s*", value)
            if m is None:
                raise ValueError(f"expected a duration such as 7d, 12h, 30m or 1y, got "
                                 f"{value!r}")
            number, unit = float(m.group(1)), m.group(2)
        else:
            raise ValueError(f"expected a duration such as 7d or 12h, got {value!r}")
        if number < 0:
            raise ValueError(f"must not be negative, got {value!r}")
        return cls(number * cls._UNITS[unit])


POLICIES = ("lru", "lfu", "size")
TRUST = ("owner", "group")


@dataclass(frozen=True)
class AuthSettings:
    """Where credentials are found; unset means WLCG discovery (:mod:`htpdata.transports.auth`)."""

    proxy: str = ""
    """X.509 proxy file; default ``$X509_USER_PROXY`` then ``/tmp/x509up_u$UID``."""
    token_file: str = ""
    """Bearer token file; default WLCG token discovery (``$BEARER_TOKEN`` ... ``/tmp/bt_u$UID``)."""
    ca_dir: str = ""
    """CA certificates folder for HTTPS; default ``$X509_CERT_DIR``, then
    ``/etc/grid-security/certificates`` if it exists, then the system store."""
    ca_file: str = ""
    """A single CA bundle file for HTTPS (e.g. a test server's self-signed certificate)."""
    token_margin: float = 60.0
    """Seconds before a token's ``exp`` at which its file is read again (or it is refreshed)."""
    client_id: str = ""
    """OAuth2 client that may refresh tokens; default ``$OIDC_CLIENT_ID``. Refreshing also needs
    ``$REFRESH_TOKEN`` (and ``$OIDC_CLIENT_SECRET`` for a confidential client)."""
    token_endpoint: str = ""
    """The issuer's token endpoint; default ``$OIDC_TOKEN_ENDPOINT``, else OIDC discovery from
    the access token's ``iss``."""
    refreshed_token_file: str = ""
    """Where refreshed access tokens are written (0600); default
    ``$XDG_RUNTIME_DIR/htpdata/access-token``. Dask workers on other nodes need a path they
    see too (the home folder)."""
    plan_rate: ByteSize = ByteSize(50 * 1000**2)
    """Bytes per second a stage is assumed to move, to warn before it starts when the token
    will expire first (and cannot be refreshed)."""


@dataclass(frozen=True)
class CacheSettings:
    """The tiered cache (see ``docs/cache.md``). Sizes accept units: ``20GB``, ``512MiB``."""

    enabled: bool = True
    """Read through the cache; ``false`` (or ``cache=False`` in the API) bypasses it."""
    memory_size: ByteSize = ByteSize(256 * 1024**2)
    """Per-process memory tier; 0 switches it off."""
    local_dir: str = ""
    """Node-local disk tier; default ``$XDG_CACHE_HOME/htpdata`` (``~/.cache/htpdata``);
    ``off`` switches it off."""
    local_size: ByteSize = ByteSize(20 * 1000**3)
    """Size of the local tier; 0 means the size of its filesystem."""
    shared_dir: str = ""
    """The shared volume tier (CephFS, NFS, Lustre mounted on every node); unset means none."""
    shared_size: ByteSize = ByteSize(0)
    """Size of the shared tier; 0 means as large as its filesystem allows."""
    high_watermark: float = 0.95
    """Eviction starts when a tier is fuller than this fraction of its size..."""
    low_watermark: float = 0.90
    """... and removes entries until it is below this one."""
    policy: str = "lru"
    """Which entries eviction takes first: ``lru``, ``lfu`` or ``size`` (largest first);
    any case."""
    max_extent: ByteSize = ByteSize(4 * 1024**2)
    """Longest range sent upstream as one (missing ranges merged across gaps stop growing
    here), and the piece size of ``htpdata stage``."""
    merge_gap: ByteSize = ByteSize(4 * 1024)
    """The largest gap between missing ranges worth fetching to save a range (about what one
    range of a vector read costs); see ``fill_ratio``."""
    fill_ratio: float = 0.02
    """Filled gaps add at most this fraction of the bytes a request asks (so a cold read
    moves at most about this much more than a direct one); 0 fills none."""
    compact_after: int = 8
    """An entry's packs (one per fetch batch) are merged into one once there are this many."""
    head: ByteSize = ByteSize(0)
    """Fixed bytes at the start of a file fetched with its first read. 0 (the default): a ROOT
    file's exact metadata extents instead, located by its header (keys list, streamers)."""
    tail: ByteSize = ByteSize(0)
    """Fixed bytes at the end of a file fetched with its first read (0: none, see ``head``)."""
    trust: str = "owner"
    """Whose cached bytes a reader accepts besides its own: ``owner`` (the tier owner's, i.e.
    what the facility staged) or ``group`` (also every member of the tier's group: an opt-in
    for groups whose members trust each other). See the trust model in ``docs/cache.md``."""
    prefetch: bool = True
    """While an analysis reads a file of a catalog dataset, fetch in the background what it
    will read of the next files (the baskets of the branches it read so far); see
    ``docs/analyses.md``."""
    prefetch_files: int = 2
    """How many of the next files of the dataset to prefetch (0 switches prefetch off)."""
    prefetch_baskets: bool = True
    """Prefetch the next files' baskets too, not only what opening them reads (header, keys,
    streamers, trees): their TTrees are then parsed in a helper process (about 0.3 s of CPU
    and 150 MB of memory; see ``docs/analyses.md``). False: metadata only, no helper."""
    prefetch_bytes: ByteSize = ByteSize(256 * 1024**2)
    """At most this many bytes prefetched per file."""
    prefetch_concurrency: int = 2
    """Background requests in flight at most (sent only while no foreground request is)."""
    prefetch_idle: Duration = Duration(30.0)
    """Prefetch stops when the analysis made no read for this long (it stopped)."""
    revalidate_after: Duration = Duration(86400.0)
    """Seconds the cache trusts what storage said of a file no catalog describes (a bare URL's
    size) before asking again; a failed or short read asks at once."""


@dataclass(frozen=True)
class RucioSettings:
    """Rucio (see ``docs/rucio.md``). The server, account and credentials come from the Rucio
    client's own configuration (``rucio.cfg``, ``RUCIO_CONFIG``, ``RUCIO_HOME``)."""

    enabled: bool = True
    """Resolve ``rucio:`` names through Rucio (needs the ``rucio-clients`` package)."""
    cms_via_rucio: bool = False
    """Resolve ``cms:/store/...`` through Rucio first (scope ``cms_scope``), catalogs second."""
    cms_scope: str = "cms"
    """The Rucio scope in which CMS logical file names are DIDs."""
    rse_expression: str = ""
    """Only replicas on RSEs matching this Rucio RSE expression (e.g. ``tier=2&country=IT``)."""
    metadata_ttl: float = 3600.0
    """Seconds a listing or replica list from Rucio is reused without asking again."""
    offline: bool = True
    """When Rucio cannot be reached, use the last answer however old (and say so)."""
    batch: int = 500
    """DIDs per ``list_replicas`` call."""


@dataclass(frozen=True)
class CatalogSettings:
    """Which catalog files are loaded, after the bundled ones and the user folder
    (see ``docs/catalogs.md``)."""

    path: tuple[str, ...] = ()
    """Extra catalog files or folders, searched after the user folder
    (``HTPDATA_CATALOGS_PATH``)."""
    bundled: bool = True
    """Load the catalogs shipped with htpdata (``cms``, ``demo``)."""


@dataclass(frozen=True)
class Settings:
    """Every setting, by section, and where each value came from."""

    catalogs: CatalogSettings = field(default_factory=CatalogSettings)
    timeouts: TimeoutSettings = field(default_factory=TimeoutSettings)
    replicas: ReplicaSettings = field(default_factory=ReplicaSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    cache: CacheSettings = field(default_factory=CacheSettings)
    rucio: RucioSettings = field(default_factory=RucioSettings)
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    """``"section.key" -> "default" | "file PATH" | "env NAME" | "argument"``."""

    def items(self) -> list[tuple[str, Any, str]]:
        """Every setting as ``(dotted key, value, source)``."""
        out = []
        for sec in _sections():
            obj = getattr(self, sec.name)
            for f in dataclasses.fields(obj):
                key = f"{sec.name}.{f.name}"
                out.append((key, getattr(obj, f.name), self.sources.get(key, "default")))
        return out


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get("HTPDATA_CONFIG"):
        return Path(env["HTPDATA_CONFIG"]).expanduser()
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "htpdata" / "config.toml"


def default_local_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The node-local tier's default folder: ``$XDG_CACHE_HOME/htpdata`` (``~/.cache/htpdata``)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "htpdata"


def user_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The user's htpdata config folder (holds ``config.toml`` and ``catalogs/``)."""
    return config_path(environ).parent


def env_variable(section: str, key: str) -> str:
    """The environment variable of a setting: ``HTPDATA_<SECTION>_<KEY>``."""
    return f"HTPDATA_{section}_{key}".upper()


def list_separator(key: str) -> str:
    """What splits a list setting given as one string: ``:`` for paths (like ``PATH``),
    ``,`` for the others."""
    return os.pathsep if "path" in key else ","


def _sections() -> list[dataclasses.Field[Any]]:
    return [f for f in dataclasses.fields(Settings) if f.name != "sources"]


def _coerce(value: Any, typ: Any, source: str, key: str) -> Any:
    origin = typing.get_origin(typ)
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"expected true or false, got {value!r}")
        if typ is ByteSize:
            return ByteSize.parse(value)
        if typ is Duration:
            return Duration.parse(value)
        if typ is float or typ is int:
            if isinstance(value, bool):
                raise ValueError(f"expected a number, got {value!r}")
            num = typ(value)
            if num < 0:
                raise ValueError(f"must not be negative, got {value!r}")
            return num
        if typ is str:
            if not isinstance(value, str):
                raise ValueError(f"expected a string, got {value!r}")
            return value
        if origin is tuple:
            if isinstance(value, str):
                value = [v for v in value.split(list_separator(key)) if v]
            if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"expected a list of strings, got {value!r}")
            return tuple(value)
        if origin in (types.UnionType, typing.Union):
            return _coerce(value, typing.get_args(typ)[0], source, key)
    except (TypeError, ValueError) as exc:
        raise ConfigError(source, key, str(exc)) from None
    raise ConfigError(source, key, f"unsupported type {typ}")  # pragma: no cover


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), "(syntax)", str(exc)) from None
    except OSError as exc:
        raise ConfigError(str(path), "(file)", exc.strerror or str(exc)) from None


def load_settings(environ: Mapping[str, str] | None = None, *, file: str | Path | None = None,
                  **overrides: Mapping[str, Any]) -> Settings:
    """Build :class:`Settings` from defaults, file, environment and ``overrides``.

    ``overrides`` are sections: ``load_settings(timeouts={"connect": 2})``.
    Unknown sections or keys are errors, so a typo never silently does nothing.
    """
    env = os.environ if environ is None else environ
    path = Path(file) if file is not None else config_path(env)
    layers: list[tuple[str, Mapping[str, Any]]] = [(f"file {path}", _read_file(path))]
    env_layer: dict[str, dict[str, str]] = {}
    section_names = {s.name.upper() for s in _sections()}
    for var in env:
        # A misspelt variable of a known section is an error, not a silent no-op.
        sec_name, _, key = var.removeprefix("HTPDATA_").partition("_")
        if var.startswith("HTPDATA_") and sec_name in section_names:
            fields = {f.name.upper() for f in dataclasses.fields(_section_type_by_name(
                sec_name.lower()))}
            if key not in fields:
                raise ConfigError(f"env {var}", f"{sec_name.lower()}.{key.lower()}",
                                  "unknown setting; known: " + ", ".join(sorted(
                                      f.lower() for f in fields)))
    for sec in _sections():
        for f in dataclasses.fields(_section_type(sec)):
            var = env_variable(sec.name, f.name)
            if var in env:
                env_layer.setdefault(sec.name, {})[f.name] = env[var]
    layers.append(("env", env_layer))
    layers.append(("argument", overrides))

    values: dict[str, dict[str, Any]] = {s.name: {} for s in _sections()}
    sources: dict[str, str] = {}
    for source, layer in layers:
        for sec_name, sec_values in layer.items():
            if sec_name not in values:
                raise ConfigError(source, sec_name, "unknown section; known: "
                                  + ", ".join(values))
            if not isinstance(sec_values, Mapping):
                raise ConfigError(source, sec_name, "expected a table of settings")
            hints = typing.get_type_hints(_section_type_by_name(sec_name))
            for key, raw in sec_values.items():
                dotted = f"{sec_name}.{key}"
                if key not in hints:
                    raise ConfigError(source, dotted, "unknown setting; known: "
                                      + ", ".join(hints))
                where = (f"env HTPDATA_{sec_name.upper()}_{key.upper()}" if source == "env"
                         else source)
                values[sec_name][key] = _coerce(raw, hints[key], where, dotted)
                sources[dotted] = where
    kwargs = {name: _section_type_by_name(name)(**vals) for name, vals in values.items()}
    kwargs["cache"] = _checked_cache(kwargs["cache"], sources)
    kwargs["replicas"] = _checked_replicas(kwargs["replicas"], sources)
    return Settings(**kwargs, sources=sources)


def _checked_cache(c: CacheSettings, sources: Mapping[str, str]) -> CacheSettings:
    """Values each fine alone but wrong (or wrong together), said in one line naming the
    setting; names normalised (``LRU`` is ``lru``)."""
    def bad(key: str, problem: str) -> ConfigError:
        return ConfigError(sources.get(f"cache.{key}", "default"), f"cache.{key}", problem)

    policy, trust = c.policy.strip().lower(), c.trust.strip().lower()
    if policy not in POLICIES:
        raise bad("policy", f"unknown policy {c.policy!r}; one of {', '.join(POLICIES)}")
    if trust not in TRUST:
        raise bad("trust", f"unknown trust {c.trust!r}; one of {', '.join(TRUST)}")
    for key in ("high_watermark", "low_watermark"):
        v = getattr(c, key)
        if not 0 < v <= 1:
            raise bad(key, f"must be a fraction in (0, 1], got {v!r} (0.95 means 95 %)")
    if c.low_watermark > c.high_watermark:
        key = "low_watermark" if "cache.low_watermark" in sources else "high_watermark"
        raise bad(key, f"low_watermark ({c.low_watermark}) must not exceed high_watermark "
                  f"({c.high_watermark})")
    for key in ("max_extent",):
        if getattr(c, key) <= 0:
            raise bad(key, "must be more than 0 bytes")
    if not 0 <= c.fill_ratio <= 1:
        raise bad("fill_ratio", f"must be a fraction in [0, 1], got {c.fill_ratio!r}")
    if c.prefetch_files < 0:
        raise bad("prefetch_files", f"must not be negative, got {c.prefetch_files}")
    if c.prefetch_concurrency < 1:
        raise bad("prefetch_concurrency", f"must be at least 1, got {c.prefetch_concurrency}")
    if c.compact_after < 2:
        raise bad("compact_after", f"must be at least 2, got {c.compact_after}")
    return dataclasses.replace(c, policy=policy, trust=trust)


def _checked_replicas(r: ReplicaSettings, sources: Mapping[str, str]) -> ReplicaSettings:
    """The proxy's address and the numbers that must be positive, said in one line naming
    the setting; the proxy mode normalised."""
    def bad(key: str, problem: str) -> ConfigError:
        return ConfigError(sources.get(f"replicas.{key}", "default"), f"replicas.{key}",
                           problem)

    if r.proxy and re.fullmatch(r"(root|xroot|https|http|davs)://([A-Za-z0-9.\-]+|"
                                r"\[[0-9A-Fa-f:]+\])(:[0-9]{1,5})?/*", r.proxy) is None:
        raise bad("proxy", "expected the proxy's address, such as root://xcache.site:1094// "
                  f"or https://xcache.site:8443/ (no path), got {r.proxy!r}")
    mode = r.proxy_mode.strip().lower()
    if mode not in ("path", "forward"):
        raise bad("proxy_mode", f"unknown proxy mode {r.proxy_mode!r}; one of path, forward")
    for key in ("proxy_timeout", "proxy_failures", "slow_window"):
        if getattr(r, key) <= 0:
            raise bad(key, f"must be more than 0, got {getattr(r, key)!r}")
    return dataclasses.replace(r, proxy_mode=mode)


def _section_type_by_name(name: str) -> type[Any]:
    hints = typing.get_type_hints(Settings)
    return typing.cast(type[Any], hints[name])


def _section_type(sec: dataclasses.Field[Any]) -> type[Any]:
    return _section_type_by_name(sec.name)
