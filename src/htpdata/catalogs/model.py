"""What a catalog says, as plain data, and the pure functions that map names with it.

A catalog declares namespaces, the sites that serve them (each with protocols that turn a
logical path into a physical URL by a prefix or by ordered regex rules, like a CMS site's
``storage.json``), fallback redirectors, and datasets (named lists of files with size and
adler32). Several catalog files merge into one :class:`CatalogSet`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from .patterns import Pattern, expand_vars, substitute

__all__ = [
    "CatalogSet",
    "Dataset",
    "FileEntry",
    "Namespace",
    "Protocol",
    "Rule",
    "Site",
    "expand_vars",
]

@dataclass(frozen=True)
class Rule:
    """``path-match`` (an RE2 pattern anchored at both ends) rewritten to ``result``.

    ``result`` is a template of ``$N`` groups and allow-listed ``${VAR}`` references, filled
    in one pass (:func:`~htpdata.catalogs.patterns.substitute`): a group's text, which comes
    from the name, is never expanded as a variable.
    """

    path_match: Pattern
    result: str

    def apply(self, path: str, environ: Mapping[str, str] | None = None) -> str | None:
        m = self.path_match.fullmatch(path)
        if m is None:
            return None
        return substitute(self.result, m, {} if environ is None else environ)


@dataclass(frozen=True)
class Protocol:
    """How one site serves one namespace over one scheme."""

    scheme: str
    namespace: str
    prefix: str | None = None
    rules: tuple[Rule, ...] = ()

    def url_for(self, path: str, environ: Mapping[str, str]) -> str | None:
        """The physical URL for a logical ``path``, or None if no rule matches."""
        if self.prefix is not None:
            base = expand_vars(self.prefix, environ)
            if self.scheme == "root" and base.count("/") == 3:  # root://host:port/ + /store
                return base.rstrip("/") + "//" + path.lstrip("/")
            return base.rstrip("/") + "/" + path.lstrip("/")
        for rule in self.rules:
            url = rule.apply(path, environ)
            if url is not None:
                return url
        return None


@dataclass(frozen=True)
class Site:
    name: str
    preference: int = 100
    """Lower is tried first (among sites of the same role)."""
    role: str = "site"
    """``site`` or ``redirector``; redirectors are fallbacks tried after every site."""
    protocols: tuple[Protocol, ...] = ()
    tape: bool = False
    """Tape endpoints are never used for streaming reads."""
    description: str = ""
    source: str = ""


@dataclass(frozen=True)
class FileEntry:
    """A file a catalog (or Rucio) knows: its name, and size and adler32 when known."""

    name: str
    size: int | None = None
    adler32: str | None = None


@dataclass(frozen=True)
class Dataset:
    namespace: str
    name: str
    files: tuple[FileEntry, ...]
    description: str = ""
    source: str = ""

    @property
    def size(self) -> int:
        return sum(f.size or 0 for f in self.files)


@dataclass(frozen=True)
class Namespace:
    name: str
    description: str = ""
    source: str = ""


@dataclass
class CatalogSet:
    """Every loaded catalog merged; later files override same-named sites and datasets."""

    namespaces: dict[str, Namespace] = field(default_factory=dict)
    sites: dict[str, Site] = field(default_factory=dict)
    datasets: dict[tuple[str, str], Dataset] = field(default_factory=dict)
    files: dict[tuple[str, str], FileEntry] = field(default_factory=dict)
    file_dataset: dict[tuple[str, str], str] = field(default_factory=dict)
    """(namespace, file path) -> the dataset listing it, for accounting."""
    sources: list[str] = field(default_factory=list)

    def merge(self, other: CatalogSet) -> None:
        self.namespaces.update(other.namespaces)
        self.sites.update(other.sites)
        self.datasets.update(other.datasets)
        self.files.update(other.files)
        self.file_dataset.update(other.file_dataset)
        self.sources.extend(other.sources)

    def sites_for(self, namespace: str) -> list[Site]:
        return [s for s in self.sites.values()
                if any(p.namespace == namespace for p in s.protocols)]

    def dataset(self, namespace: str, name: str) -> Dataset | None:
        return self.datasets.get((namespace, name.rstrip("/")))

    def datasets_under(self, namespace: str, prefix: str) -> list[Dataset]:
        return [d for (ns, n), d in sorted(self.datasets.items())
                if ns == namespace and n.startswith(prefix)]

    def file(self, namespace: str, path: str) -> FileEntry | None:
        return self.files.get((namespace, path))


def default_environ() -> Mapping[str, str]:
    return os.environ
