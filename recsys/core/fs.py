"""Small file-system operations that work on local paths and on any Hadoop URI.

Local paths (no scheme, or ``file://``) use Python's ``os``; anything else (``hdfs://``,
``gs://``, ``s3a://``, ...) goes through Hadoop's ``FileSystem`` in the JVM, so the same code
runs on a laptop and on a cluster. Only small files (manifests, JSON state) are read or written
whole; data always goes through Spark.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import uuid
from collections.abc import Callable
from urllib.parse import urlparse


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


def _jfs(spark, path: str):
    from recsys.core.spark import hadoop_fs

    return hadoop_fs(spark, path)


def exists(spark, path: str) -> bool:
    if is_local(path):
        return os.path.exists(local_path(path))
    fs, jpath = _jfs(spark, path)
    return bool(fs.exists(jpath))


def is_dir(spark, path: str) -> bool:
    if is_local(path):
        return os.path.isdir(local_path(path))
    fs, jpath = _jfs(spark, path)
    return bool(fs.exists(jpath) and fs.getFileStatus(jpath).isDirectory())


def listdir(spark, path: str) -> list[str]:
    """Names (not paths) in a directory, sorted."""
    if is_local(path):
        return sorted(os.listdir(local_path(path)))
    fs, jpath = _jfs(spark, path)
    return sorted(str(st.getPath().getName()) for st in fs.listStatus(jpath))


def delete(spark, path: str) -> None:
    if is_local(path):
        p = local_path(path)
        if os.path.isdir(p):
            shutil.rmtree(p)
        elif os.path.exists(p):
            os.remove(p)
        return
    fs, jpath = _jfs(spark, path)
    fs.delete(jpath, True)


def mkdirs(spark, path: str) -> None:
    if is_local(path):
        os.makedirs(local_path(path), exist_ok=True)
        return
    fs, jpath = _jfs(spark, path)
    fs.mkdirs(jpath)


def rename(spark, src: str, dst: str) -> None:
    """Atomic rename where the file system offers it (POSIX, HDFS); raises on failure."""
    if is_local(src):
        os.replace(local_path(src), local_path(dst))
        return
    fs, jsrc = _jfs(spark, src)
    _, jdst = _jfs(spark, dst)
    if not fs.rename(jsrc, jdst):
        raise OSError(f"could not rename {src} to {dst}")


def read_text(spark, path: str) -> str:
    if is_local(path):
        with open(local_path(path), encoding="utf-8") as fh:
            return fh.read()
    fs, jpath = _jfs(spark, path)
    stream = fs.open(jpath)
    try:
        data = spark.sparkContext._jvm.org.apache.commons.io.IOUtils.toByteArray(stream)
    finally:
        stream.close()
    return bytes(data).decode("utf-8")


def write_text(spark, path: str, text: str) -> None:
    """Write a small text file atomically: a temporary sibling, then a rename."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    if is_local(path):
        os.makedirs(os.path.dirname(local_path(path)) or ".", exist_ok=True)
        with open(local_path(tmp), "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(local_path(tmp), local_path(path))
        return
    fs, jtmp = _jfs(spark, tmp)
    stream = fs.create(jtmp, True)
    try:
        stream.write(bytearray(text.encode("utf-8")))
    finally:
        stream.close()
    _, jpath = _jfs(spark, path)
    fs.delete(jpath, False)
    if not fs.rename(jtmp, jpath):
        raise OSError(f"could not write {path}")


def read_first_line(spark, path: str) -> str | None:
    """The first line of a text file without reading the rest; None for an empty file."""
    if is_local(path):
        with open(local_path(path), "rb") as fh:
            raw = fh.readline()
        if not raw:
            return None
        return raw.decode("utf-8", errors="replace").rstrip("\r\n")
    fs, jpath = _jfs(spark, path)
    jvm = spark.sparkContext._jvm
    stream = fs.open(jpath)
    try:
        reader = jvm.java.io.BufferedReader(jvm.java.io.InputStreamReader(stream, "UTF-8"))
        line = reader.readLine()
    finally:
        stream.close()
    return None if line is None else str(line).rstrip("\r\n")


def copy_to_local(spark, src: str, dst_dir: str) -> str:
    """Copy one remote file into a local directory (streamed by Hadoop, not through Python)."""
    name = src.rstrip("/").rsplit("/", 1)[-1]
    dst = os.path.join(dst_dir, name)
    fs, jsrc = _jfs(spark, src)
    jvm = spark.sparkContext._jvm
    fs.copyToLocalFile(False, jsrc, jvm.org.apache.hadoop.fs.Path("file://" + dst), True)
    return dst


def copy_from_local(spark, src: str, dst: str) -> None:
    fs, jdst = _jfs(spark, dst)
    jvm = spark.sparkContext._jvm
    fs.copyFromLocalFile(False, True, jvm.org.apache.hadoop.fs.Path("file://" + src), jdst)


def fingerprint(spark, path: str) -> str:
    """A content key for a remote file or directory: Hadoop checksum, else length + mtime."""
    fs, jpath = _jfs(spark, path)
    status = fs.getFileStatus(jpath)
    parts = [str(status.getLen()), str(status.getModificationTime())]
    if not status.isDirectory():
        checksum = fs.getFileChecksum(jpath)
        if checksum is not None:
            parts.append(str(checksum.toString()))
    else:
        for st in sorted(fs.listStatus(jpath), key=lambda s: str(s.getPath().getName())):
            parts += [str(st.getPath().getName()), str(st.getLen()), str(st.getModificationTime())]
    return "|".join(parts)


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
