"""coffea's ``dataset_tools.preprocess``, once per file content.

What ``preprocess`` derives from a file (its entries, steps, uuid and form) depends only on the
file's content and the options, and the files of a dataset never change: their identity is
name, size and adler32. :func:`preprocess` is a drop-in for coffea's: for each ``htpdata://``
file it looks for the result kept for exactly that content and those options in the cache's
tiers (small blobs next to the file's bytes, :func:`htpdata.cache.whole.put_blob`; accepted only
where the tier's trust model accepts the file's bytes), and calls coffea's own ``preprocess``
(on the scheduler given: Dask when it is Dask) only for the files it has not seen, then keeps
their results. A file that changed has a new identity, so its old result is never found.
While coffea works on the unseen files, their metadata (all its workers read of them) is
fetched into the tiers from here, a few files at a time (:class:`_Warming`), so a worker's open
finds it there instead of paying three to five round trips to the storage.

The result is what coffea's would be: each unseen file is preprocessed as a dataset of its own
(in one ``preprocess`` call for all of them), which gives its per-file result and its form; a
dataset's form is the union coffea computes, which for files of one form is that form. When
the files of a dataset have different forms, the dataset is handed to coffea whole (the union
of several forms is coffea's to compute), as is every dataset with a file that is not an
``htpdata://`` URL, every parquet dataset, and ``preprocess_legacy_root=True``.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import logging
import threading
import warnings
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from .errors import CacheWriteError, UsageError

if TYPE_CHECKING:
    from .cache import CachedReader
    from .client import Client

__all__ = ["preprocess"]

log = logging.getLogger("htpdata.coffea")
_PROTOCOL = "htpdata://"
_SEP = "\x00htpdata-file-"
_AHEAD = 8
"""Files whose metadata is fetched at once while coffea preprocesses (see :class:`_Warming`)."""


def _coffea() -> Any:
    try:
        from coffea import dataset_tools
    except ImportError:
        raise UsageError("htpdata.coffea needs coffea: pip install 'htpdata[coffea]'") from None
    return dataset_tools


def preprocess(fileset: Any, step_size: int | None = None, align_clusters: bool = False,
               recalculate_steps: bool = False, files_per_batch: int = 1,
               skip_bad_files: bool = False,
               file_exceptions: Any = (OSError,), save_form: bool | None = None,
               scheduler: Callable[..., Any] | str | Any | None = None,
               uproot_options: Mapping[str, Any] | None = None,
               step_size_safety_factor: float = 0.5, allow_empty_datasets: bool = False,
               preprocess_legacy_root: bool = False, use_row_groups: bool = False,
               parquet_options: Mapping[str, Any] | None = None, *,
               client: Client | None = None) -> tuple[Any, Any]:
    """coffea's ``dataset_tools.preprocess`` (same arguments, same result, same return type:
    dicts for a dict, ``DataGroupSpec`` for one), running coffea's only for the files whose
    content it has not preprocessed before with these options. ``client``: the htpdata client
    whose cache keeps the results (default: the default client)."""
    dt = _coffea()
    options: dict[str, Any] = {
        "step_size": step_size, "align_clusters": align_clusters,
        "recalculate_steps": recalculate_steps, "files_per_batch": files_per_batch,
        "skip_bad_files": skip_bad_files, "file_exceptions": file_exceptions,
        "save_form": save_form, "scheduler": scheduler,
        "uproot_options": dict(uproot_options or {}),
        "step_size_safety_factor": step_size_safety_factor,
        "allow_empty_datasets": allow_empty_datasets, "use_row_groups": use_row_groups,
        "parquet_options": dict(parquet_options or {}),
    }
    if preprocess_legacy_root:
        return dt.preprocess(fileset, preprocess_legacy_root=True, **options)  # type: ignore[no-any-return]
    as_dict = not isinstance(fileset, dt.DataGroupSpec)
    spec = dt.DataGroupSpec.model_validate(fileset) if as_dict else fileset
    if client is None:
        from .default import default_client
        client = default_client()
    avail, updated = _Run(dt, client, options).run(spec.model_dump())
    out = (dt.DataGroupSpec.model_validate(avail), dt.DataGroupSpec.model_validate(updated))
    return (out[0].model_dump(), out[1].model_dump()) if as_dict else out


class _File:
    """One file of a dataset: its entry in the fileset, and where its result is kept."""

    def __init__(self, url: str, entry: dict[str, Any], reader: CachedReader,
                 blob: str) -> None:
        self.url, self.entry, self.blob = url, entry, blob
        self.reader = reader  # its identity and tiers; the metadata is fetched ahead through it
        self.ident, self.tiers, self.private = reader.identity(), reader.disks, reader.private
        self.result: dict[str, Any] | None = None  # {"file": entry out, "form": str | None}

    def recall(self) -> bool:
        from .cache.whole import get_blob

        for tier in self.tiers:
            try:
                data = get_blob(tier, self.ident, self.blob)
            except OSError as exc:
                log.debug("%s: no preprocess result from %s: %s", self.url, tier.name, exc)
                continue
            if data is not None:
                got = json.loads(data)
                if isinstance(got, dict) and isinstance(got.get("file"), dict):
                    self.result = got
                    return True
        return False

    def keep(self) -> None:
        from .cache.whole import put_blob

        data = json.dumps(self.result, sort_keys=True).encode()
        for tier in self.tiers:
            if not tier.writable:
                continue
            try:
                put_blob(tier, self.ident, self.blob, data, private=self.private)
            except (CacheWriteError, OSError) as exc:
                log.warning("%s: cannot keep its preprocess result in the %s tier: %s",
                            self.url, tier.name, exc)


class _Warming:
    """While coffea preprocesses the files not seen before, their metadata (header, keys,
    streamers, the tree's record: all its workers will read of them) is fetched into the tiers
    from here, ``_AHEAD`` files at a time in the dataset's order, so that a worker opening a
    file finds it there instead of waiting for three to five round trips to the storage
    (:func:`htpdata.prefetch.warm_metadata`). What the worker reads first is already under
    way: single flight makes it wait for that fetch rather than send its own. Stopped when
    coffea returns; off with ``cache.prefetch = false``."""

    def __init__(self, client: Client, files: list[_File]) -> None:
        self.client, self.files = client, files
        self.cancel = threading.Event()
        self.pool: ThreadPoolExecutor | None = None

    def __enter__(self) -> _Warming:
        if self.files and self.client.settings.cache.prefetch:
            self.pool = ThreadPoolExecutor(min(_AHEAD, len(self.files)),
                                           thread_name_prefix="htpdata-preprocess-warm")
            for f in self.files:
                self.pool.submit(self._warm, f)
        return self

    def _warm(self, f: _File) -> None:
        from .prefetch import warm_metadata

        if self.cancel.is_set():
            return
        try:
            warm_metadata(f.reader, [str(f.entry.get("object_path") or "")], self.cancel)
        except Exception as exc:  # the warm never breaks a preprocess: the worker reads it
            log.debug("%s: metadata not fetched ahead: %s", f.url, exc)

    def __exit__(self, *exc: object) -> None:
        self.cancel.set()
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)


def _workers_see(client: Client, scheduler: Any) -> bool:
    """Do the workers of ``scheduler`` read the tiers this process writes: a shared tier is
    configured, or they run on this node (dask's local schedulers, a cluster whose workers'
    addresses are all this host's)?"""
    if any(t.name == "shared" for t in client.cache.tiers):
        return True
    if scheduler is None:  # dask's default: a distributed client if one was made
        try:
            scheduler = importlib.import_module("distributed").default_client()
        except (ImportError, ValueError):
            return True
    if isinstance(scheduler, str) or not hasattr(scheduler, "scheduler_info"):
        return True
    try:
        import socket
        from urllib.parse import urlsplit

        workers = scheduler.scheduler_info().get("workers", {})
        here = {"localhost", socket.gethostname(), socket.getfqdn()}
        hosts = {urlsplit(addr).hostname or "" for addr in workers}
        return all(h in here or h.startswith("127.") or h == "::1" for h in hosts)
    except Exception:  # not a dask.distributed client we can ask: assume elsewhere
        return False


def _form_key(compressed: str | None) -> str | None:
    """What a form is, whatever its gzip header says (coffea compresses forms with the time
    of the call in it: two compressions of one form differ)."""
    if compressed is None:
        return None
    from coffea.util import decompress_form

    return hashlib.sha256(decompress_form(compressed).encode()).hexdigest()


class _Run:
    def __init__(self, dt: Any, client: Client, options: dict[str, Any]) -> None:
        self.dt, self.client, self.options = dt, client, options
        import coffea
        import uproot

        keyed = {k: v for k, v in options.items()
                 if k in ("step_size", "align_clusters", "recalculate_steps", "save_form",
                          "step_size_safety_factor")}
        keyed["versions"] = [coffea.__version__, uproot.__version__]
        self.options_key = json.dumps(keyed, sort_keys=True, default=str)

    def files_of(self, ds: dict[str, Any]) -> list[_File] | None:
        """The dataset's files with their identities, or None if any cannot be kept (not an
        ``htpdata://`` URL, no disk tier)."""
        from .cache import CachedReader
        from .fs import HtpdataFileSystem

        if ds.get("format") not in (None, "root"):
            return None
        out = []
        for url, entry in ds["files"].items():
            if not url.startswith(_PROTOCOL):
                return None
            reader = self.client.reader(HtpdataFileSystem.name_of(url), prefetch=False)
            if not isinstance(reader, CachedReader) or not reader.disks:
                return None
            per_file = {k: entry.get(k) for k in ("object_path", "steps", "num_entries",
                                                   "uuid")}
            text = f"{self.options_key}\0{json.dumps(per_file, sort_keys=True, default=str)}"
            blob = "coffea-preprocess." + hashlib.sha256(text.encode()).hexdigest()[:24]
            out.append(_File(url, entry, reader, blob))
        return out

    def run(self, data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        whole: dict[str, Any] = {}
        split: dict[str, list[_File]] = {}
        todo: dict[str, Any] = {}
        unseen: list[_File] = []
        for name, ds in data.items():
            files = self.files_of(ds)
            if files is None:
                whole[name] = ds
                continue
            split[name] = files
            for i, f in enumerate(files):
                if not f.recall():
                    unseen.append(f)
                    todo[f"{name}{_SEP}{i}"] = {**ds, "files": {f.url: f.entry},
                                                "compressed_form": None}
        log.info("preprocess: %d files known, %d to preprocess, %d datasets whole",
                 sum(len(v) for v in split.values()) - len(todo), len(todo), len(whole))
        if not _workers_see(self.client, self.options["scheduler"]):
            unseen = []  # node-local tiers only, workers elsewhere: they would fetch it again
        with _Warming(self.client, unseen):
            got_a, got_u = self._coffea({**whole, **todo}, allow_empty=bool(todo))
        for key in todo:
            name, index = key.rsplit(_SEP, 1)
            f = split[name][int(index)]
            done = got_a.get(key)
            if done is not None:
                form = done.get("compressed_form")
                f.result = {"file": done["files"][f.url], "form": form,
                            "form_key": _form_key(form)}
                f.keep()
        avail: dict[str, Any] = {}
        updated: dict[str, Any] = {}
        regroup: dict[str, Any] = {}
        for name, ds in data.items():
            if name in whole:
                if name in got_a:
                    avail[name] = got_a[name]
                elif todo and not self.options["allow_empty_datasets"]:
                    raise Exception(  # what coffea raises
                        "There was no populated list of files returned from querying your "
                        "input dataset.\nPlease check your xrootd endpoints, and avoid "
                        f"redirectors.\nInput dataset: {name}")
                updated[name] = got_u[name]
                continue
            files = split[name]
            forms = {f.result.get("form_key") or _form_key(f.result["form"]): f.result["form"]
                     for f in files if f.result is not None and f.result["form"] is not None}
            if len(forms) > 1:  # the union of several forms: coffea's to compute
                regroup[name] = ds
                continue
            form = next(iter(forms.values()), None)
            ok = {f.url: f.result["file"] for f in files if f.result is not None}
            updated[name] = {**ds, "compressed_form": form,
                             "files": {f.url: f.result["file"] if f.result is not None
                                       else got_u[f"{name}{_SEP}{i}"]["files"][f.url]
                                       for i, f in enumerate(files)}}
            if ok:
                avail[name] = {**ds, "compressed_form": form, "files": ok}
            elif not self.options["allow_empty_datasets"]:
                raise Exception(  # what coffea raises
                    "There was no populated list of files returned from querying your input "
                    "dataset.\nPlease check your xrootd endpoints, and avoid redirectors."
                    f"\nInput dataset: {name}")
            else:
                warnings.warn(f"no file of {name} could be preprocessed", stacklevel=3)
        if regroup:
            again_a, again_u = self._coffea(regroup, allow_empty=False)
            avail.update({k: v for k, v in again_a.items()})
            updated.update(again_u)
        order = list(data)
        return ({k: avail[k] for k in order if k in avail},
                {k: updated[k] for k in order if k in updated})

    def _coffea(self, data: dict[str, Any], allow_empty: bool
                ) -> tuple[dict[str, Any], dict[str, Any]]:
        if not data:
            return {}, {}
        opts = dict(self.options)
        if allow_empty:  # a per-file dataset whose file failed is not an empty dataset
            opts["allow_empty_datasets"] = True
        spec = self.dt.DataGroupSpec.model_validate(data)
        with warnings.catch_warnings():
            if allow_empty and not self.options["allow_empty_datasets"]:
                warnings.filterwarnings("ignore", message="There was no populated list")
            a, u = self.dt.preprocess(spec, **opts)
        return a.model_dump(), u.model_dump()
