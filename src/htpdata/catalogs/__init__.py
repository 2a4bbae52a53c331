"""Catalogs: which namespaces exist, which sites serve them, and named datasets."""

from .loader import load_catalog, parse_catalog
from .model import CatalogSet, Dataset, FileEntry, Namespace, Protocol, Rule, Site
from .registry import bundled_dir, catalog_files, load_catalogs

__all__ = [
    "CatalogSet",
    "Dataset",
    "FileEntry",
    "Namespace",
    "Protocol",
    "Rule",
    "Site",
    "bundled_dir",
    "catalog_files",
    "load_catalog",
    "load_catalogs",
    "parse_catalog",
]
