"""Whose bytes a reader accepts and where a writer's bytes go: the trust model (pure).

Anchored on what the filesystem enforces, never on names or checksums a writer chooses: a file's
owner (``st_uid``, which only root can change) and the folders' modes. A disk tier's root folder
belongs to the tier's *owner*, the trusted writer (the account operators run ``htpdata stage``
and eviction as). Inside the root, bytes live in *areas*, each one trust domain:

``trusted``  ``ROOT/trusted``, written only by the owner, readable by everyone who may read the
             tier: what the facility staged. Accepted by every reader.
``user``     ``ROOT/users/UID``, one per user, created by that user, mode 0700: what the user's
             own reads fetched. Accepted only by that user (and root).
``group``    ``ROOT/group`` (``cache.trust = "group"`` only), mode 3770 in the tier's group:
             what members fetched, shared among members who chose to trust each other.

A reader accepts a piece only from a file whose ``st_uid`` (``fstat`` of the very descriptor
read) is one this area accepts, in a folder whose owner and mode are the area's. Root's files
are accepted everywhere: root can forge any of this anyway.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from dataclasses import dataclass
from functools import lru_cache

__all__ = ["AreaSpec", "Me", "TierOwner", "accepted", "area_problem", "is_private",
           "read_areas", "write_area"]

TRUSTED, USER, GROUP = "trusted", "user", "group"
TRUST_MODES = ("owner", "group")


@dataclass(frozen=True)
class Me:
    """The identity of this process (real uid; its groups)."""

    uid: int
    gid: int
    groups: frozenset[int]

    @classmethod
    def current(cls) -> Me:
        return cls(os.getuid(), os.getgid(), frozenset(os.getgroups()) | {os.getgid()})


@dataclass(frozen=True)
class TierOwner:
    """The tier root's owner (the trusted writer) and group (the collaboration group)."""

    uid: int
    gid: int


@dataclass(frozen=True)
class AreaSpec:
    """An area: its kind and, for a user area, whose."""

    kind: str
    uid: int | None = None

    @property
    def rel(self) -> str:
        """Its folder relative to the tier root."""
        if self.kind == USER:
            return f"users/{self.uid}"
        return self.kind

    def __str__(self) -> str:
        return self.rel


def write_area(me: Me, owner: TierOwner, trust: str, private: bool) -> AreaSpec:
    """Where this process stores bytes: private bytes (fetched with a credential, or named in a
    private namespace) only in the user's own area; the owner's other bytes in the trusted area;
    with ``trust = "group"`` a member's in the group area; everyone else's in their own area."""
    if private:
        return AreaSpec(USER, me.uid)
    if me.uid == owner.uid:
        return AreaSpec(TRUSTED)
    if trust == "group" and owner.gid in me.groups:
        return AreaSpec(GROUP)
    return AreaSpec(USER, me.uid)


def read_areas(me: Me, owner: TierOwner, trust: str) -> list[AreaSpec]:
    """The areas whose pieces this process accepts, in the order they are looked in."""
    out = [AreaSpec(USER, me.uid)]
    if me.uid == owner.uid:
        out.insert(0, AreaSpec(TRUSTED))
    else:
        out.append(AreaSpec(TRUSTED))
    if trust == "group" and (owner.gid in me.groups or me.uid == owner.uid):
        out.append(AreaSpec(GROUP))
    return out


@lru_cache(maxsize=4096)
def _member(uid: int, gid: int) -> bool:
    try:
        pw = pwd.getpwuid(uid)
    except KeyError:
        return False
    if pw.pw_gid == gid:
        return True
    try:
        return pw.pw_name in grp.getgrgid(gid).gr_mem
    except KeyError:
        return False


def accepted(area: AreaSpec, uid: int, owner: TierOwner) -> bool:
    """Does a reader accept a file owned by ``uid`` found in ``area``?"""
    if uid == 0:
        return True
    if area.kind == USER:
        return uid == area.uid
    if area.kind == TRUSTED:
        return uid == owner.uid
    return uid == owner.uid or _member(uid, owner.gid)


def area_problem(area: AreaSpec, st: os.stat_result, owner: TierOwner) -> str | None:
    """Why a folder found where ``area`` should be is not that area (None if it is): the
    wrong owner (someone planted it), or a mode that lets others write into it."""
    mode = stat.S_IMODE(st.st_mode)
    if not stat.S_ISDIR(st.st_mode):
        return "not a folder"
    if area.kind == USER:
        if st.st_uid != area.uid:
            return f"owned by uid {st.st_uid}, not by uid {area.uid} (planted by another user?)"
        if mode & 0o022:
            return f"writable by others (mode {mode:04o})"
        return None
    if st.st_uid != owner.uid:
        return f"owned by uid {st.st_uid}, not by the tier's owner (uid {owner.uid})"
    if area.kind == TRUSTED and mode & 0o022:
        return f"writable by others (mode {mode:04o})"
    if area.kind == GROUP and (mode & 0o3070 != 0o3070 or mode & 0o002):
        return f"not a sticky group folder (mode {mode:04o}, expected 3770)"
    return None


def modes(area: AreaSpec, root_mode: int) -> tuple[int, int]:
    """(folder mode, file mode) for what is created in ``area``: private areas owner-only; the
    trusted area as readable as the root (never world-writable); the group area 3770/0640."""
    if area.kind == USER:
        return 0o700, 0o600
    if area.kind == GROUP:
        return 0o3770, 0o640
    read = root_mode & 0o055
    return 0o700 | read, 0o600 | (read & 0o044)


def is_private(name: str, credentialed: bool) -> bool:
    """Must bytes of ``name`` stay owner-only? Yes when a credential went with the request
    (a token, a proxy, one written into the URL: whoever lacks it must not read them from the
    cache) and for names in private namespaces (Rucio ``user.*`` and ``group.*`` scopes)."""
    if credentialed:
        return True
    if name.startswith("rucio:"):
        scope = name.split(":", 2)[1] if name.count(":") >= 2 else ""
        return scope.startswith(("user.", "group."))
    return False
