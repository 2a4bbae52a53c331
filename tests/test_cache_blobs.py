"""Small named blobs kept by content (``htpdata.cache.whole.put_blob``/``get_blob``): found only
for exactly the identity they were kept for, kept whole when the entry's byte packs are merged,
and removed with the old content when the name gets a new one."""

from __future__ import annotations

from pathlib import Path

from htpdata.cache.identity import Identity
from htpdata.cache.tier import DiskTier
from htpdata.cache.whole import get_blob, put_blob


def test_a_blob_is_found_for_its_content_only_and_survives_merging(tmp_path: Path) -> None:
    tier = DiskTier("local", tmp_path / "t", 10**9, compact_after=3)
    ident = Identity("x:/store/a.root", 1000, "0badcafe")
    assert put_blob(tier, ident, "meta", b'{"entries": 200}') > 0
    assert get_blob(tier, ident, "meta") == b'{"entries": 200}'
    assert get_blob(tier, ident, "other") is None
    assert get_blob(tier, Identity(ident.name, 1000, "deadbeef"), "meta") is None
    assert get_blob(tier, Identity(ident.name, 999, "0badcafe"), "meta") is None
    for i in range(5):  # byte packs of the same content, merged after every third
        tier.store(ident, [(i * 100, bytes([i]) * 50)], {"name": ident.name}, False)
        tier.tidy(ident, False)
    tier.compact_written()
    assert tier.read(ident, [(0, 50)]) == [(0, b"\x00" * 50)]
    assert get_blob(tier, ident, "meta") == b'{"entries": 200}'
    # The name gets a new content: writing it drops the old one's packs, its blob with them.
    new = Identity(ident.name, 1000, "deadbeef")
    tier.store(new, [(0, b"n" * 10)], {"name": new.name}, False)
    tier.tidy(new, False)
    assert get_blob(tier, ident, "meta") is None
    assert get_blob(tier, new, "meta") is None
