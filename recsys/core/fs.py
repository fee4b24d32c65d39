"""Small file-system operations on local paths and on remote stores, without the JVM.

Every operation goes through a :mod:`pyarrow.fs` file system: the local disk for plain paths and
``file://``, and pyarrow's clients for ``hdfs://`` / ``viewfs://`` (libhdfs: needs ``JAVA_HOME``
and ``CLASSPATH=$(hadoop classpath --glob)``, as on any Hadoop edge node), ``s3://`` and
``s3a://`` (AWS credentials from the usual chain: environment, ``~/.aws``, instance role; Spark's
``spark.hadoop.fs.s3a.*`` keys are not seen here), ``gs://`` / ``gcs://`` and ``abfs://``. The
same code runs under classic Spark and Spark Connect: nothing here talks to a Spark driver, so
only small files (manifests, JSON state, locks) are read or written whole here; data always goes
through Spark, which resolves the same URIs on its side (under Spark Connect: the server's side,
so a local path must name the same place for client and server; see the README).

What holds where (``write_text``, ``rename``):

- **local disk, HDFS**: a rename to a new name is atomic, so a file written by
  :func:`write_text` is never seen half-written, and a directory renamed into place (a split, a
  Parquet cache) appears whole or not at all.
- **object stores (S3, GCS, Azure)**: an object appears whole when its upload ends, so a file
  from :func:`write_text` is never half-written either; but "renaming" a directory copies its
  objects one by one, so directory commits there rely on a marker written last (the split's
  manifest, the cache's ``_recsys_done.json``), never on the rename.

``write_text`` replaces a file with the *previous copy kept until the new one is in place*
(``<name>.prev``), so a crash at any point leaves the old text or the new one, never neither; the
readers here (:func:`read_text`, :func:`exists`) fall back to the ``.prev`` copy.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import threading
import uuid
from collections.abc import Callable
from urllib.parse import urlparse

from recsys.core.errors import RecsysError

#: Suffix of the copy :func:`write_text` keeps until the new text is in place.
PREV_SUFFIX = ".prev"
#: URI schemes pyarrow names differently: Hadoop's S3A connector is pyarrow's S3 client.
_SCHEME_ALIASES = {"s3a": "s3", "s3n": "s3", "gcs": "gs"}


def is_local(path: str) -> bool:
    scheme = urlparse(str(path)).scheme
    return scheme in ("", "file") or (len(scheme) == 1)  # "C:" on Windows


def local_path(path: str) -> str:
    """``file:///x`` -> ``/x``; plain paths are made absolute."""
    parsed = urlparse(str(path))
    if parsed.scheme == "file":
        return os.path.abspath(parsed.path)
    return os.path.abspath(str(path))


def to_uri(path: str) -> str:
    """A path Spark executors can resolve: absolute ``file://`` for local paths."""
    return "file://" + local_path(path) if is_local(path) else str(path)


def join(base: str, *parts: str) -> str:
    out = str(base).rstrip("/")
    for part in parts:
        out = out + "/" + str(part).strip("/")
    return out


def parent(path: str) -> str:
    """The folder holding ``path`` (``"."`` for a bare relative name), for local paths and URIs
    alike: ``hdfs://nn/a/b`` -> ``hdfs://nn/a``, ``outputs/split`` -> ``outputs``."""
    base = str(path).rstrip("/")
    return base.rsplit("/", 1)[0] if "/" in base else "."


def same_path(a: str, b: str) -> bool:
    """Do ``a`` and ``b`` name the same place? Local paths compare resolved (``./x/`` is ``x``),
    URIs as written less a trailing slash."""
    if is_local(a) and is_local(b):
        return local_path(a) == local_path(b)
    return str(a).rstrip("/") == str(b).rstrip("/")


_clients: dict[str, object] = {}
_clients_lock = threading.Lock()


def filesystem(path: str):
    """``(pyarrow FileSystem, path inside it)`` for a local path or a remote URI. One client per
    scheme and authority is kept for the process (connections are reused)."""
    import pyarrow.fs as pafs

    if is_local(path):
        return pafs.LocalFileSystem(), local_path(path)
    parsed = urlparse(str(path))
    scheme = _SCHEME_ALIASES.get(parsed.scheme, parsed.scheme)
    uri = str(path).replace(parsed.scheme + "://", scheme + "://", 1)
    key = f"{scheme}://{parsed.netloc}"
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            try:
                client, _ = pafs.FileSystem.from_uri(uri)
            except Exception as err:
                hint = (" (pyarrow's HDFS client needs libjvm and the Hadoop jars: set JAVA_HOME and "
                        "CLASSPATH=$(hadoop classpath --glob))" if scheme in ("hdfs", "viewfs") else
                        "; supported: local paths, file://, hdfs://, viewfs://, s3://, s3a://, gs://, abfs://")
                raise RecsysError(f"{path}: cannot open this file system from Python: {err}{hint}") from err
            _clients[key] = client
    if scheme in ("hdfs", "viewfs"):
        return client, parsed.path or "/"
    bucket = parsed.netloc.split("@", 1)[0]  # abfs://container@account.dfs.core.windows.net/...
    inner = bucket + parsed.path
    return client, inner.strip("/") if scheme == "mock" else inner.rstrip("/")


def _info(path: str):
    client, inner = filesystem(path)
    return client, inner, client.get_file_info(inner)


def exists(spark, path: str) -> bool:
    """Does ``path`` exist (file or directory)? ``spark`` is unused: every function here takes
    the session first so that call sites read the same whatever the store."""
    import pyarrow.fs as pafs

    return _info(path)[2].type != pafs.FileType.NotFound


def is_dir(spark, path: str) -> bool:
    import pyarrow.fs as pafs

    return _info(path)[2].type == pafs.FileType.Directory


def listdir(spark, path: str) -> list[str]:
    """Names (not paths) in a directory, sorted."""
    import pyarrow.fs as pafs

    client, inner = filesystem(path)
    infos = client.get_file_info(pafs.FileSelector(inner, allow_not_found=False))
    return sorted(info.base_name for info in infos)


def delete(spark, path: str) -> None:
    """Delete a file or a directory tree; nothing to do when it does not exist."""
    import pyarrow.fs as pafs

    client, inner, info = _info(path)
    if info.type == pafs.FileType.Directory:
        client.delete_dir(inner)
    elif info.type != pafs.FileType.NotFound:
        client.delete_file(inner)


def mkdirs(spark, path: str) -> None:
    client, inner = filesystem(path)
    client.create_dir(inner, recursive=True)


def rename(spark, src: str, dst: str) -> None:
    """Move ``src`` to ``dst`` (a new name). Atomic on local disks and HDFS; on object stores a
    copy then a delete (see the module docstring). Raises on failure."""
    client, inner_src = filesystem(src)
    other, inner_dst = filesystem(dst)
    if client is not other and not is_local(src):
        raise RecsysError(f"cannot rename {src} to {dst}: not on the same file system")
    try:
        client.move(inner_src, inner_dst)
        return
    except OSError as err:
        import pyarrow.fs as pafs

        if is_local(src) or client.get_file_info(inner_src).type != pafs.FileType.Directory:
            raise OSError(f"could not rename {src} to {dst}: {err}") from err
    # object stores have no directory rename: copy, then delete (not atomic: see the docstring)
    pafs.copy_files(inner_src, inner_dst, source_filesystem=client, destination_filesystem=client)
    client.delete_dir(inner_src)


def _read_bytes(path: str) -> bytes:
    client, inner = filesystem(path)
    with client.open_input_stream(inner) as stream:
        return stream.read()


def read_text(spark, path: str) -> str:
    """The text of a small UTF-8 file; when a crashed :func:`write_text` left only the previous
    copy (``<path>.prev``), that copy. FileNotFoundError when there is neither."""
    found = read_text_or_none(spark, path)
    if found is None:
        raise FileNotFoundError(f"{path}: no such file")
    return found


def read_text_or_none(spark, path: str) -> str | None:
    """:func:`read_text`, or None when neither ``path`` nor its ``.prev`` copy exists."""
    for candidate in (path, path + PREV_SUFFIX):
        try:
            return _read_bytes(candidate).decode("utf-8")
        except FileNotFoundError:
            continue
    return None


def write_text(spark, path: str, text: str) -> None:
    """Replace the small text file ``path`` so that a crash at any step leaves the old text or
    the new one readable by :func:`read_text`, on every store of the module docstring:

    1. the new text goes to a temporary sibling (``<path>.tmp-<random>``), closed before use;
    2. the current file, if any, is renamed to ``<path>.prev`` (a stale ``.prev`` is dropped
       first: while ``path`` exists, it is not needed);
    3. the temporary file is renamed to ``path``;
    4. ``<path>.prev`` is deleted.

    Between 2 and 3 only ``.prev`` exists, and readers take it. No step deletes the only copy.
    """
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    prev = path + PREV_SUFFIX
    client, inner_tmp = filesystem(tmp)
    client.create_dir(filesystem(parent(path))[1], recursive=True)
    try:
        with client.open_output_stream(inner_tmp) as out:
            out.write(text.encode("utf-8"))
        if exists(spark, path):
            delete(spark, prev)
            rename(spark, path, prev)
        rename(spark, tmp, path)
    except BaseException:
        with contextlib.suppress(Exception):
            delete(spark, tmp)
        raise
    delete(spark, prev)


def read_first_line(spark, path: str) -> str | None:
    """The first line of a text file without reading the rest; None for an empty file."""
    client, inner = filesystem(path)
    with client.open_input_stream(inner) as stream:
        raw = bytearray()
        while True:
            chunk = stream.read(64 * 1024)
            if not chunk:
                break
            cut = chunk.find(b"\n")
            if cut >= 0:
                raw += chunk[:cut]
                break
            raw += chunk
    if not raw:
        return None
    return bytes(raw).decode("utf-8", errors="replace").rstrip("\r\n")


def copy_to_local(spark, src: str, dst_dir: str) -> str:
    """Copy a file or a directory tree (``src``, any store) into the local directory
    ``dst_dir``, streamed; returns the local copy's path."""
    import pyarrow.fs as pafs

    name = src.rstrip("/").rsplit("/", 1)[-1]
    dst = os.path.join(dst_dir, name)
    client, inner = filesystem(src)
    info = client.get_file_info(inner)
    if info.type == pafs.FileType.Directory:
        os.makedirs(dst, exist_ok=True)
    pafs.copy_files(inner, dst, source_filesystem=client, destination_filesystem=pafs.LocalFileSystem())
    return dst


def copy_from_local(spark, src: str, dst: str) -> None:
    """Copy the local file or directory tree ``src`` to ``dst`` (any store)."""
    import pyarrow.fs as pafs

    client, inner = filesystem(dst)
    pafs.copy_files(local_path(src), inner, source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=client)


def fingerprint(spark, path: str) -> str:
    """A content key for a remote file or directory: size and modification time of the file, or
    of every file under the directory (in path order)."""
    import pyarrow.fs as pafs

    client, inner, info = _info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(f"{path}: no such file or directory")
    infos = [info] if info.type != pafs.FileType.Directory else sorted(
        client.get_file_info(pafs.FileSelector(inner, recursive=True)), key=lambda i: i.path)
    return "|".join(f"{i.path[len(inner):]}:{i.size}:{i.mtime_ns}" for i in infos)


def scratch_dir(what: str) -> str:
    """A new, empty folder name for files Spark writes and this process then reads back (a
    model being logged): under ``RECSYS_SCRATCH`` when set (a URI every Spark node and this
    process reach, e.g. ``hdfs://nn/tmp/recsys`` or ``s3://bucket/tmp``: needed when Spark's
    executors or a Spark Connect server do not share this machine's disk), else under the local
    temporary folder."""
    import tempfile

    root = os.environ.get("RECSYS_SCRATCH") or tempfile.gettempdir()
    return join(root, f"recsys-{what}-{uuid.uuid4().hex[:12]}")


# ---------------------------------------------------------------- temporary siblings


def _host() -> str:
    # no '-' in it, so the temporary name parses back unambiguously
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "localhost"


def temp_dir_name(split_dir: str) -> str:
    """``<split_dir>.tmp-<host>-<pid>-<random>``: a later writer can tell whether this one still runs."""
    return f"{split_dir.rstrip('/')}.tmp-{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. EPERM: it exists, owned by someone else
        return True
    return True


def remove_stale_temps(spark, split_dir: str, complete_marker: str | None = None, what: str = "writer",
                       progress: Callable[[str], None] = lambda message: None) -> list[str]:
    """Delete temporary siblings of ``split_dir`` (:func:`temp_dir_name`) left by killed writers;
    returns their paths.

    Only those written on this host by a process that no longer runs, and holding no
    ``complete_marker`` file, are deleted: a live split's directory must not vanish under it, and a
    directory with a manifest may be the only complete copy. Leftovers from other hosts stay
    (they are never read as a split: they have no manifest and another name).
    """
    base = split_dir.rstrip("/")
    parent, name = base.rsplit("/", 1) if "/" in base else (".", base)
    pattern = re.compile(re.escape(name) + r"\.tmp-(?P<host>[A-Za-z0-9._]+)-(?P<pid>\d+)-[0-9a-f]{8}")
    removed = []
    with contextlib.suppress(Exception):  # tidying up must never fail a split
        for entry in listdir(spark, parent or "/"):
            found = pattern.fullmatch(entry)
            if not found or found["host"] != _host() or int(found["pid"]) == os.getpid() \
                    or _pid_running(int(found["pid"])):
                continue
            path = join(parent, entry) if parent else "/" + entry
            if complete_marker and exists(spark, join(path, complete_marker)):
                continue
            delete(spark, path)
            removed.append(path)
            progress(f"[{what}] removed {path}, left by a {what} that was killed")
    return removed
