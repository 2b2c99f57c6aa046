"""Files through one layer: a local path or any filesystem TensorFlow knows (gs://, s3://, hdfs://, ram://).

Every reader reads its input with `read_input` (or `read_bytes`), so the same code takes a local
dataset in tests and a gs:// bucket on Kubeflow. A path with a scheme goes through `tf.io.gfile`;
a plain local path goes through the standard library, which reads the same bytes without loading
TensorFlow (seconds of import, and the STDF reader must stay importable and fast without it).
TensorFlow is imported inside the functions that need it, never at module import.

Compressed input is read as it is: `.gz` and `.bz2` files are decompressed in memory
(`decompress`); a damaged archive raises `ArchiveError`.
"""

from __future__ import annotations

import bz2
import gzip
import os
import zlib

# Suffix -> decompressor, for files a tester or an archive job compressed (`W01.stdf.gz`).
COMPRESSIONS = {".gz": gzip.decompress, ".bz2": bz2.decompress}


class ArchiveError(OSError):
    """A compressed file that does not decompress (damaged, truncated, or not that format)."""


def has_scheme(path: str) -> bool:
    """True for `gs://bucket/x`, `ram://x`, `file:///x`: paths that go through tf.io.gfile."""
    return "://" in path


def _gfile():
    import tensorflow as tf  # only for paths with a scheme: see the module docstring

    return tf


def _os_error(path: str, error: Exception) -> OSError:
    """tf.errors.* as the OSError a local read would raise (so callers catch one type)."""
    tf = _gfile()
    if isinstance(error, tf.errors.NotFoundError):
        return FileNotFoundError(f"{path}: {error.message}")
    if isinstance(error, tf.errors.PermissionDeniedError):
        return PermissionError(f"{path}: {error.message}")
    return OSError(f"{path}: {error}")


def read_bytes(path: str) -> bytes:
    """The whole file, as stored. Raises OSError (FileNotFoundError, ...) for any scheme."""
    if not has_scheme(path):
        with open(path, "rb") as f:
            return f.read()
    tf = _gfile()
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            return f.read()
    except tf.errors.OpError as error:
        raise _os_error(path, error) from error


def write_bytes(path: str, data: bytes) -> None:
    """Write (replace) a file, creating nothing but the file itself."""
    if not has_scheme(path):
        with open(path, "wb") as f:
            f.write(data)
        return
    tf = _gfile()
    try:
        with tf.io.gfile.GFile(path, "wb") as f:
            f.write(data)
    except tf.errors.OpError as error:
        raise _os_error(path, error) from error


def exists(path: str) -> bool:
    if not has_scheme(path):
        return os.path.exists(path)
    return _gfile().io.gfile.exists(path)


def glob(pattern: str) -> list[str]:
    """Paths matching `pattern`, sorted."""
    if not has_scheme(pattern):
        import glob as local

        return sorted(local.glob(pattern))
    return sorted(_gfile().io.gfile.glob(pattern))


def compression_of(path: str) -> str | None:
    """ ".gz" / ".bz2" if the name says the file is compressed, else None."""
    suffix = os.path.splitext(path)[1].lower()
    return suffix if suffix in COMPRESSIONS else None


def strip_compression(path: str) -> str:
    """`W01.stdf.gz` -> `W01.stdf`; other names unchanged."""
    return path[: -len(compression_of(path))] if compression_of(path) else path


def decompress(path: str, data: bytes) -> bytes:
    """`data` decompressed as the name of `path` says (unchanged if not compressed)."""
    suffix = compression_of(path)
    if suffix is None:
        return data
    try:
        return COMPRESSIONS[suffix](data)
    except (OSError, EOFError, ValueError, zlib.error) as error:
        kind = "gzip" if suffix == ".gz" else "bzip2"
        raise ArchiveError(f"corrupt {kind} archive ({type(error).__name__}: {error})") from error


def read_input(path: str) -> bytes:
    """The file's content, decompressed if its name ends in .gz / .bz2."""
    return decompress(path, read_bytes(path))
