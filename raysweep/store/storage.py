"""Where a sweep lives: a local or NFS path, or an object store (`s3://`, `gs://`).

A local location is a plain `pathlib.Path`, so the local path of every module is ordinary file
code. An object-store location is a universal_pathlib `UPath` over its fsspec filesystem (s3fs,
gcsfs): the same `/`, `glob`, `exists`, `read_text` API. The functions here are the few
operations whose meaning differs between the two:

- atomicity: locally, write a temporary name and rename; on an object store a single PUT (or a
  multipart upload, completed on close) is atomic already and a rename would be a copy.
- memory-mapped data arrays need a local file: `local_copy` fetches a data dir once per node.
- DuckDB and pyarrow need the filesystem object as well as the path.

Credentials and endpoints are configured the way the AWS / GCP tools expect (environment,
profile, instance role, `AWS_ENDPOINT_URL` for S3-compatible servers); raysweep passes none, so
Ray's own pyarrow filesystem and s3fs read the same configuration.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import os
import shutil
import stat
import tempfile
import uuid
from pathlib import Path, PurePosixPath
from typing import Optional, Union

import pyarrow as pa
import pyarrow.parquet as pq
from upath import UPath

# protocol -> the fsspec package that implements it
OBJECT_STORES = {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs"}

StoragePath = Union[Path, UPath]


class StorageError(ValueError):
    """A storage location that cannot be used; the message names it and the fix."""


def protocol_of(location: str) -> str:
    return location.split("://", 1)[0].lower() if "://" in location else ""


def check_location(location: str) -> str:
    """A storage string in canonical form: an absolute local path, or `<store>://bucket/prefix`
    whose filesystem package is installed."""
    protocol = protocol_of(location)
    if not protocol:
        return str(Path(location).expanduser().resolve())
    if protocol not in OBJECT_STORES:
        raise StorageError(f"{location}: unknown storage scheme {protocol}://; use a local or NFS "
                           f"path, or one of {', '.join(s + '://' for s in OBJECT_STORES)}")
    rest = location.split("://", 1)[1].strip("/")
    if not rest:
        raise StorageError(f"{location}: names no bucket; use {protocol}://BUCKET/PREFIX")
    package = OBJECT_STORES[protocol]
    if importlib.util.find_spec(package) is None:
        extra = "gcs" if package == "gcsfs" else "s3"
        raise StorageError(f"{location}: {protocol}:// needs the {package} package; "
                           f"pip install 'raysweep[{extra}]'")
    cache_root()  # stored files are read through the node cache: refuse an unsafe one before any request
    return f"{protocol}://{rest}"


def location(path: Union[str, os.PathLike]) -> StoragePath:
    """The path object for a storage string or path: local ones absolute, stored ones as UPaths
    (a UPath passed in keeps its storage options)."""
    if isinstance(path, UPath) and is_remote(path):
        return path
    canonical = check_location(str(path))
    if not protocol_of(canonical):
        return Path(canonical)
    # No listing cache: workers on other nodes write shards and markers that this process must
    # see on its next look, not a listing cached before they existed.
    return UPath(canonical, use_listings_cache=False)


def is_remote(path: StoragePath) -> bool:
    return isinstance(path, UPath) and path.protocol not in ("", "file", "local")


def first_missing_dir(path: StoragePath) -> Optional[Path]:
    """The outermost of `path` and its parents that does not exist yet (None: it exists, or remote)."""
    if is_remote(path):
        return None
    local = Path(path)
    return next((d for d in reversed([local, *local.parents]) if not d.exists()), None)


def remove_empty_dirs(root: Path) -> None:
    """rmdir `root` and every directory under it that holds no file, deepest first."""
    for directory in [*sorted(root.rglob("*"), reverse=True), root]:
        if directory.is_dir():
            try:
                directory.rmdir()
            except OSError:  # not empty
                pass


def ensure_dir(path: StoragePath) -> None:
    """mkdir -p locally. Object stores have no directories (and s3fs's mkdir would create a
    missing bucket, turning a typo into a new bucket)."""
    if not is_remote(path):
        Path(path).mkdir(parents=True, exist_ok=True)


def temporary_sibling(path: Path) -> Path:
    """Where `path` is written before it is renamed into place: hidden, beside it, unique per writer."""
    return path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")


def temporaries_under(directory: StoragePath) -> list[StoragePath]:
    """Every `temporary_sibling` under a directory: what writers killed mid-write left."""
    return sorted(directory.rglob(".*.tmp-*"))


def remove_stale_temporaries(path: StoragePath) -> None:
    """Temporary files of `path` left by a writer killed mid-write (local only: an object store
    never shows an upload that did not complete)."""
    if not is_remote(path):
        for stale in Path(path).parent.glob(f".{Path(path).name}.tmp-*"):
            stale.unlink(missing_ok=True)


def fsync_path(path: Path) -> None:
    """Flush a local file's (or directory's: its entries') data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_replace(tmp: Path, path: Path) -> None:
    """Rename `tmp` over `path` once its bytes are on disk, then flush the rename: after a power loss the name
    holds whole content, so a marker written after this never outlives the data it vouches for."""
    fsync_path(tmp)
    os.replace(tmp, path)
    fsync_path(Path(path).parent)


def fsync_tree(root: Path) -> None:
    """Every file under a local dir, then every dir, on disk (a checkpoint or data dir before its marker)."""
    for directory, _, files in os.walk(root, topdown=False):
        for name in files:
            fsync_path(Path(directory) / name)
        fsync_path(Path(directory))


def atomic_write_bytes(path: StoragePath, data: bytes) -> None:
    """Readers see the old content or the new, never half; locally, the new is on disk when this returns."""
    if is_remote(path):
        path.write_bytes(data)  # one PUT: the object appears whole or not at all, and durably
        return
    tmp = temporary_sibling(Path(path))
    tmp.write_bytes(data)
    durable_replace(tmp, Path(path))


def atomic_write_text(path: StoragePath, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def sha256_file(path: StoragePath) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_parquet(table: pa.Table, path: StoragePath, **options) -> str:
    """Write a Parquet file atomically; returns its sha256."""
    if is_remote(path):
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, **options)
        data = sink.getvalue().to_pybytes()
        path.write_bytes(data)
        return hashlib.sha256(data).hexdigest()
    tmp = temporary_sibling(Path(path))
    pq.write_table(table, tmp, **options)
    durable_replace(tmp, Path(path))
    return sha256_file(path)


def arrow_source(path: StoragePath) -> dict:
    """Keyword arguments that let pyarrow.parquet read `path` where it lives."""
    if is_remote(path):
        return {"source": path.path, "filesystem": path.fs}
    return {"source": str(path)}


def read_parquet_schema(path: StoragePath) -> pa.Schema:
    source = arrow_source(path)
    return pq.read_schema(source.pop("source"), **source)


def read_parquet_metadata(path: StoragePath) -> pq.FileMetaData:
    source = arrow_source(path)
    return pq.read_metadata(source.pop("source"), **source)


def read_parquet_table(path: StoragePath) -> pa.Table:
    source = arrow_source(path)
    return pq.read_table(source.pop("source"), **source)


def upload_tree(local_dir: Path, destination: UPath, last: Optional[str] = None) -> None:
    """Upload a local directory to an object store, the file named `last` (its completeness marker, if it
    has one) after every other file."""
    assert is_remote(destination), destination  # locally, build in place and rename instead
    files = sorted(p for p in Path(local_dir).rglob("*") if p.is_file())
    for file in sorted(files, key=lambda p: p.name == last):
        target = destination / file.relative_to(local_dir).as_posix()
        destination.fs.put_file(str(file), target.path)


def download_tree(source: UPath, local_dir: Path) -> None:
    assert is_remote(source), source
    local_dir.mkdir(parents=True)
    for remote_file in source.fs.find(source.path):
        relative = PurePosixPath(remote_file).relative_to(source.path)
        (local_dir / relative).parent.mkdir(parents=True, exist_ok=True)
        source.fs.get_file(remote_file, str(local_dir / relative))


def cache_root() -> Path:
    """Per-node, per-user cache for copies of stored files (data arrays, catalogs): `$RAYSWEEP_CACHE`, or
    `raysweep-cache-<uid>` under the temp dir, mode 0700. Refused when another user owns it or can write
    it: a shared temp dir lets anyone create that name first and plant files we would trust."""
    root = Path(os.environ.get("RAYSWEEP_CACHE") or Path(tempfile.gettempdir()) / f"raysweep-cache-{os.getuid()}")
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    found = root.stat()
    if found.st_uid != os.getuid():
        problem = f"is owned by uid {found.st_uid}, not you (uid {os.getuid()})"
    elif found.st_mode & 0o022:
        problem = f"is writable by others (mode {stat.S_IMODE(found.st_mode):o})"
    else:
        return root
    raise StorageError(f"{root}: the cache dir {problem}; remove it, or set RAYSWEEP_CACHE to a directory only "
                       "you can write")


def node_cache_dir(kind: str) -> Path:
    directory = cache_root() / kind
    directory.mkdir(mode=0o700, exist_ok=True)
    return directory


def _version_tag(info: dict) -> str:
    """What changes whenever a stored object is rewritten: its ETag (S3) or generation (GCS); size and
    modification time where the store reports neither."""
    for key in ("ETag", "etag", "generation"):
        if info.get(key):
            return str(info[key]).strip('"')
    return f"{info.get('size')}-{info.get('LastModified') or info.get('mtime') or info.get('created')}"


def local_copy(directory: StoragePath, key: str, marker: str) -> Path:
    """A local directory with the content of `directory`: itself when it is local; otherwise a
    node-local copy, fetched once per key (content-addressed, so a copy never goes stale) and
    complete when `marker` is in it. Concurrent fetchers each stage their own copy; the first
    rename wins."""
    if not is_remote(directory):
        return Path(directory)
    cached = node_cache_dir("data") / key
    if (cached / marker).exists():
        return cached
    staging = temporary_sibling(cached)
    try:
        download_tree(directory, staging)
        cached.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.rename(staging, cached)
        except OSError:
            if not (cached / marker).exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return cached


def fetch_file(path: StoragePath, cache_name: str) -> Path:
    """A local copy of one stored file, fetched again whenever the stored one is rewritten (a new ETag or
    generation: the copy is named by it); a local file is returned as it is."""
    if not is_remote(path):
        return Path(path)
    tag = hashlib.sha256(_version_tag(path.fs.info(path.path)).encode()).hexdigest()[:16]
    target = node_cache_dir("files") / f"{cache_name}-{tag}"
    if target.exists():
        return target
    staging = temporary_sibling(target)
    path.fs.get_file(path.path, str(staging))
    os.replace(staging, target)
    for older in target.parent.glob(f"{glob.escape(cache_name)}-*"):  # earlier versions of the same file
        if older != target and len(older.name) == len(target.name):
            older.unlink(missing_ok=True)
    return target


def register_filesystems(con, paths: list[StoragePath]) -> None:
    """Let a DuckDB connection read the object stores these paths live on (httpfs cannot be
    installed offline; DuckDB reads through the registered fsspec filesystem instead)."""
    seen = set()
    for path in paths:
        if is_remote(path) and path.protocol not in seen:
            con.register_filesystem(path.fs)
            seen.add(path.protocol)
