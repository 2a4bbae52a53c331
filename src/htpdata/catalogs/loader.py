"""Read one catalog file (TOML) into a :class:`~htpdata.catalogs.model.CatalogSet`.

Everything is validated on load, and every problem is reported as a
:class:`~htpdata.errors.CatalogError` naming the file, the key and, where it can be found, the
line. A catalog that loads is one the resolver can use without further checks. The format is
documented in ``docs/catalogs.md``; ``catalogs/cms.toml`` is a complete example.

Catalogs may come from people who do not mean well (a shared folder, a co-tenant), so loading
is bounded: the file is opened without blocking and must be a regular file of at most
:data:`MAX_BYTES`; nesting, counts and lengths have limits (:data:`LIMITS`); ``path-match`` is
RE2 (linear time); ``${VAR}`` only names allow-listed variables. Each breach is a CatalogError,
never a traceback or a hang.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ..errors import CatalogError
from .model import CatalogSet, Dataset, FileEntry, Namespace, Protocol, Rule, Site
from .patterns import PatternError, compile_pattern, variable_refusal, variables_in

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["FORMAT_VERSION", "LIMITS", "MAX_BYTES", "load_catalog", "parse_catalog"]

FORMAT_VERSION = 1
MAX_BYTES = 32 << 20
"""Largest catalog file read (32 MiB: about 450 000 files with size and adler32)."""
LIMITS = {"namespaces": 10_000, "sites": 10_000, "protocols": 64, "rules": 1_000,
          "all rules": 10_000, "datasets": 100_000, "files": 500_000, "url": 4096}
"""Per catalog file: namespaces; sites; protocols per site; rules per protocol and in all;
datasets; files in all datasets; characters of a prefix or result."""
SCHEMES = ("root", "davs", "https", "http", "file")
ROLES = ("site", "redirector")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
_ADLER = re.compile(r"[0-9a-f]{8}")
T = TypeVar("T")


class _Checker:
    """Typed access to a TOML table, raising CatalogError with file, key and line."""

    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.text = text
        self.totals: dict[str, int] = {}

    @functools.cached_property
    def lines(self) -> list[str]:  # only when an error is reported
        return self.text.splitlines()

    def line_of(self, key: str) -> int | None:
        """Best-effort line of a dotted key: its table header, else the last part as a key."""
        parts = [p for p in re.split(r"\.|\[\d+\]", key) if p]
        if not parts:
            return None
        header = re.compile(r"^\s*\[\[?\s*" + r"\s*\.\s*".join(
            rf'(?:"{re.escape(p)}"|{re.escape(p)})' for p in parts) + r"\s*\]\]?")
        for i, line in enumerate(self.lines, 1):
            if header.match(line):
                return i
        last = re.compile(rf'^\s*(?:"{re.escape(parts[-1])}"|{re.escape(parts[-1])})\s*=')
        inline = re.compile(rf'[{{,]\s*{re.escape(parts[-1])}\s*=')
        for pat in (last, inline):
            for i, line in enumerate(self.lines, 1):
                if pat.search(line):
                    return i
        return None

    def fail(self, key: str, problem: str) -> CatalogError:
        return CatalogError(self.path, problem, key=key, line=self.line_of(key))

    def get(self, table: dict[str, Any], key: str, where: str, typ: type[T],
            default: T | None = None, required: bool = False) -> Any:
        dotted = f"{where}.{key}" if where else key
        if key not in table:
            if required:
                raise self.fail(where or key, f"missing required key {key!r}")
            return default
        value = table[key]
        ok = isinstance(value, typ) and not (typ is int and isinstance(value, bool))
        if not ok:
            raise self.fail(dotted, f"expected {_type_name(typ)}, got {type(value).__name__} "
                            f"{value!r}")
        return value

    def limit(self, where: str, count: int, most: int, what: str = "entries") -> None:
        if count > most:
            raise self.fail(where, f"{count} {what}; at most {most} are allowed")

    def count(self, what: str, n: int, where: str) -> None:
        """Add ``n`` to the catalog-wide count of ``what``; fail past its limit."""
        self.totals[what] = self.totals.get(what, 0) + n
        self.limit(where, self.totals[what], LIMITS[what], f"{what} in this catalog")

    def only(self, table: dict[str, Any], where: str, allowed: tuple[str, ...]) -> None:
        for key in table:
            if key not in allowed:
                raise self.fail(f"{where}.{key}" if where else key,
                                f"unknown key {key!r}; allowed: {', '.join(allowed)}")


def _type_name(typ: type) -> str:
    return {str: "a string", int: "an integer", dict: "a table", list: "a list",
            bool: "true or false"}.get(typ, typ.__name__)


def _read_bounded(p: Path) -> bytes:
    """The file's bytes: opened without blocking (a FIFO planted as a catalog cannot hang us),
    a regular file, at most MAX_BYTES."""
    fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CatalogError(str(p), "not a regular file")
        if st.st_size > MAX_BYTES:
            raise CatalogError(str(p), f"larger than {MAX_BYTES >> 20} MiB ({st.st_size} bytes)")
        chunks, left = [], MAX_BYTES + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > MAX_BYTES:  # it grew while we read
            raise CatalogError(str(p), f"larger than {MAX_BYTES >> 20} MiB")
        return data
    finally:
        with contextlib.suppress(OSError):
            os.close(fd)


def load_catalog(path: str | Path) -> CatalogSet:
    """Load and validate one catalog file."""
    p = Path(path)
    try:
        text = _read_bounded(p).decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogError(str(p), f"cannot read: {getattr(exc, 'strerror', None) or exc}") \
            from None
    return parse_catalog(text, str(p))


def parse_catalog(text: str, path: str = "<string>") -> CatalogSet:
    """Parse and validate catalog ``text``; ``path`` is used in error messages only."""
    if len(text) > MAX_BYTES:
        raise CatalogError(path, f"larger than {MAX_BYTES >> 20} MiB")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        raise CatalogError(path, f"not valid TOML: {exc}",
                           line=int(m.group(1)) if m else None) from None
    except (RecursionError, MemoryError):
        raise CatalogError(path, "nested too deeply or too large to parse") from None
    c = _Checker(path, text)
    c.only(data, "", ("format", "description", "namespaces", "sites", "datasets"))
    fmt = c.get(data, "format", "", int, default=FORMAT_VERSION)
    if fmt != FORMAT_VERSION:
        raise c.fail("format", f"unsupported format {fmt}; this htpdata reads format "
                     f"{FORMAT_VERSION}")
    out = CatalogSet(sources=[path])
    c.limit("namespaces", len(_tables(c, data, "namespaces")), LIMITS["namespaces"])
    c.limit("sites", len(_tables(c, data, "sites")), LIMITS["sites"])
    c.limit("datasets", len(_tables(c, data, "datasets")), LIMITS["datasets"])
    for ns_name, ns in _tables(c, data, "namespaces").items():
        where = f"namespaces.{ns_name}"
        _check_name(c, ns_name, where)
        c.only(ns, where, ("description",))
        out.namespaces[ns_name] = Namespace(
            ns_name, c.get(ns, "description", where, str, ""), source=path)
    for site_name, site in _tables(c, data, "sites").items():
        out.sites[site_name] = _parse_site(c, site_name, site, path)
    for ds_name, ds in _tables(c, data, "datasets").items():
        dataset = _parse_dataset(c, ds_name, ds, path)
        out.datasets[(dataset.namespace, dataset.name)] = dataset
        for f in dataset.files:
            out.files[(dataset.namespace, f.name)] = f
            out.file_dataset[(dataset.namespace, f.name)] = f"{dataset.namespace}:{dataset.name}"
    return out


def _tables(c: _Checker, data: dict[str, Any], key: str) -> dict[str, dict[str, Any]]:
    section: dict[str, dict[str, Any]] = c.get(data, key, "", dict, default={})
    for name, value in section.items():
        if not isinstance(value, dict):
            raise c.fail(f"{key}.{name}", f"expected a table, got {type(value).__name__}")
    return section


def _check_name(c: _Checker, name: str, where: str) -> None:
    if not _NAME.fullmatch(name):
        raise c.fail(where, f"invalid name {name!r}: a letter, then letters, digits, '_', '-', '.'")


def _parse_site(c: _Checker, name: str, site: dict[str, Any], path: str) -> Site:
    where = f"sites.{name}"
    _check_name(c, name, where)
    c.only(site, where, ("description", "preference", "role", "tape", "protocols"))
    preference = c.get(site, "preference", where, int, 100)
    tape = c.get(site, "tape", where, bool, False)
    description = c.get(site, "description", where, str, "")
    role = c.get(site, "role", where, str, "site")
    if role not in ROLES:
        raise c.fail(f"{where}.role", f"role must be one of {', '.join(ROLES)}, got {role!r}")
    protos = c.get(site, "protocols", where, list, required=True)
    if not protos:
        raise c.fail(f"{where}.protocols", "a site needs at least one protocol")
    c.limit(f"{where}.protocols", len(protos), LIMITS["protocols"], "protocols")
    parsed = tuple(_parse_protocol(c, f"{where}.protocols[{i}]", p) for i, p in enumerate(protos))
    return Site(name=name, preference=preference, role=role, protocols=parsed, tape=tape,
                description=description, source=path)


def _parse_protocol(c: _Checker, where: str, proto: Any) -> Protocol:
    if not isinstance(proto, dict):
        raise c.fail(where, f"expected a table, got {type(proto).__name__}")
    c.only(proto, where, ("scheme", "namespace", "prefix", "rules"))
    scheme = c.get(proto, "scheme", where, str, required=True)
    if scheme not in SCHEMES:
        raise c.fail(f"{where}.scheme", f"scheme must be one of {', '.join(SCHEMES)}, got "
                     f"{scheme!r}")
    namespace = c.get(proto, "namespace", where, str, required=True)
    prefix = c.get(proto, "prefix", where, str, None)
    rules_raw = c.get(proto, "rules", where, list, None)
    if (prefix is None) == (rules_raw is None):
        raise c.fail(where, "give exactly one of 'prefix' or 'rules'")
    if prefix is not None:
        _check_url(c, f"{where}.prefix", prefix, scheme)
        return Protocol(scheme, namespace, prefix=prefix)
    assert rules_raw is not None
    if not rules_raw:
        raise c.fail(f"{where}.rules", "'rules' is empty")
    c.limit(f"{where}.rules", len(rules_raw), LIMITS["rules"], "rules")
    c.count("all rules", len(rules_raw), f"{where}.rules")
    rules = tuple(_parse_rule(c, f"{where}.rules[{i}]", r, scheme) for i, r in enumerate(rules_raw))
    return Protocol(scheme, namespace, rules=rules)


def _parse_rule(c: _Checker, where: str, rule: Any, scheme: str) -> Rule:
    if not isinstance(rule, dict):
        raise c.fail(where, f"expected a table, got {type(rule).__name__}")
    c.only(rule, where, ("path-match", "result"))
    pattern = c.get(rule, "path-match", where, str, required=True)
    result = c.get(rule, "result", where, str, required=True)
    try:
        compiled = compile_pattern(pattern)
    except PatternError as exc:
        raise c.fail(f"{where}.path-match", f"invalid regular expression: {exc}") from None
    for group in re.findall(r"\$(\d+)", result):
        if int(group) > compiled.groups:
            raise c.fail(f"{where}.result", f"refers to ${group} but 'path-match' has only "
                         f"{compiled.groups} group(s)")
    _check_url(c, f"{where}.result", result, scheme)
    return Rule(compiled, result)


def _check_url(c: _Checker, where: str, url: str, scheme: str) -> None:
    if len(url) > LIMITS["url"]:
        raise c.fail(where, f"longer than {LIMITS['url']} characters")
    for name in variables_in(url):
        why = variable_refusal(name)
        if why is not None:
            raise c.fail(where, f"${{{name}}} cannot be used: {why}")
    if not url.startswith(f"{scheme}://"):
        raise c.fail(where, f"must start with {scheme}:// (the protocol's scheme), got {url!r}")
    body = url.split("://", 1)[1]
    if "/../" in f"/{body}/" or "/./" in body:
        raise c.fail(where, "'..' and '.' segments are not allowed")


def _parse_dataset(c: _Checker, name: str, ds: dict[str, Any], path: str) -> Dataset:
    where = f'datasets."{name}"'
    c.only(ds, where, ("namespace", "description", "files"))
    if not name.startswith("/") or "/../" in name + "/":
        raise c.fail(where, "a dataset name is an absolute path without '..', e.g. /A/B/C")
    namespace = c.get(ds, "namespace", where, str, required=True)
    files_raw = c.get(ds, "files", where, list, required=True)
    c.count("files", len(files_raw), f"{where}.files")
    files: list[FileEntry] = []
    seen: set[str] = set()
    for i, f in enumerate(files_raw):
        fw = f"{where}.files[{i}]"
        if not isinstance(f, dict):
            raise c.fail(fw, f"expected a table, got {type(f).__name__}")
        c.only(f, fw, ("name", "size", "adler32"))
        fname = c.get(f, "name", fw, str, required=True)
        if not fname.startswith("/") or "/../" in fname + "/":
            raise c.fail(f"{fw}.name", f"a file name is an absolute logical path, got {fname!r}")
        if fname in seen:
            raise c.fail(f"{fw}.name", f"file {fname!r} is listed twice")
        seen.add(fname)
        size = c.get(f, "size", fw, int, None)
        if size is not None and size < 0:
            raise c.fail(f"{fw}.size", "size must not be negative")
        adler = c.get(f, "adler32", fw, str, None)
        if adler is not None:
            adler = adler.lower().rjust(8, "0")
            if not _ADLER.fullmatch(adler):
                raise c.fail(f"{fw}.adler32", f"adler32 is 8 hex digits, got {f['adler32']!r}")
        files.append(FileEntry(fname, size, adler))
    return Dataset(namespace, name.rstrip("/"), tuple(files),
                   c.get(ds, "description", where, str, ""), source=path)


def check_references(cat: CatalogSet, fail: Callable[[str, str, str], Exception]) -> None:
    """Cross-file checks after merging: every namespace used by a site or dataset is declared."""
    for site in cat.sites.values():
        for p in site.protocols:
            if p.namespace not in cat.namespaces:
                raise fail(site.source, f"sites.{site.name}",
                           f"namespace {p.namespace!r} is not declared in any catalog")
    for ds in cat.datasets.values():
        if ds.namespace not in cat.namespaces:
            raise fail(ds.source, f'datasets."{ds.name}".namespace',
                       f"namespace {ds.namespace!r} is not declared in any catalog")
