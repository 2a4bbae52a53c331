"""Rucio: DIDs and (optionally) CMS names resolved through a Rucio server.

- :mod:`.convert`: Rucio's answers as htpdata types (pure);
- :mod:`.service`: the real ``rucio-clients`` with error translation and a metadata cache.
"""

from .convert import did_name, file_entry, replicas_of
from .service import MetadataCache, RucioService

__all__ = ["MetadataCache", "RucioService", "did_name", "file_entry", "replicas_of"]
