"""Small file-system operations that work on local paths and on any Hadoop URI.

Local paths (no scheme, or ``file://``) use Python's ``os``; anything else (``hdfs://``,
``gs://``, ``s3a://``, ...) goes through Hadoop's ``FileSystem`` in the JVM, so the same code
runs on a laptop and on a cluster. Only small files (manifests, JSON state) are read or written
whole; data always goes through Spark.
"""

from __future__ import annotations

import os
import shutil
import uuid
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


def _jfs(spark, path: str):
    from recsys.spark import hadoop_fs

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
