"""The posting file: one file of page-aligned posting lists, plus its writer and reader.

Layout of ``postings.bin``::

    page 0            header: magic, version, dim, dtype code, postings, entries, file size
    page-aligned      posting i: ids int64[count] | vectors dtype[count, dim] | zero padding

Offsets and counts live in ``table.npy`` (int64 rows: offset, count, padded bytes). Every
posting starts on a 4 KiB boundary and spans whole pages, so it can be read with one
positional read, also with ``O_DIRECT`` into an aligned buffer.

Updated generations (``index/spann/lire.py``) give postings spare room: their table rows
are ``offset, count, nbytes, capacity, crc`` and a block is ``ids int64[capacity] |
vectors[capacity, dim] | padding``; only the first ``count`` slots of each part are the
posting, the rest is free room filled in place by later appends. A dead head's row has
capacity ``DEAD`` (-1) and count 0. The build's 3-column table means capacity = count.
An entry's int64 id is ``row | version << 48`` (see ``VERSION_SHIFT``); the build writes
version 0 everywhere, so its ids are plain rows.

``crc`` packs two zlib crc32s, ``crc32(ids[:count]) << 32 | crc32(vectors[:count])``
(as the int64 with the same 64 bits): each part grows only at its end, so an append
updates both crcs from the appended bytes alone, without re-reading the posting.
"""

from __future__ import annotations

import hashlib
import mmap
import zlib
import os
import struct
from pathlib import Path

import numpy as np

from searchagent.errors import IndexFormatError

PAGE = 4096
MAGIC = b"SPANNPL\x00"
VERSION = 1
DTYPES = {"float16": 1, "float32": 2}
HEADER = struct.Struct("<8sIIIQQQ")   # magic, version, dim, dtype, postings, entries, size
OFFSET, COUNT, NBYTES, CAPACITY, CRC = range(5)   # columns of an updated generation's table
DEAD = -1                                          # capacity of a dead head's table row
VERSION_SHIFT = 48
ROW_MASK = (1 << VERSION_SHIFT) - 1


def posting_bytes(count: np.ndarray | int, dim: int, itemsize: int) -> np.ndarray | int:
    """Padded on-disk size of postings with ``count`` entries."""
    raw = np.asarray(count, dtype=np.int64) * (8 + dim * itemsize)
    return (raw + PAGE - 1) // PAGE * PAGE


def layout(counts: np.ndarray, dim: int, dtype: str) -> tuple[np.ndarray, int]:
    """The offset table (h, 3) for these posting lengths and the total file size."""
    sizes = posting_bytes(counts, dim, np.dtype(dtype).itemsize)
    offsets = PAGE + np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    table = np.stack([offsets, counts.astype(np.int64), sizes], axis=1)
    return table, int(PAGE + sizes.sum())


def widen(table: np.ndarray) -> np.ndarray:
    """A table in the 5-column form (a build's 3-column table: capacity = count, crc 0)."""
    if table.shape[1] == 5:
        return table
    out = np.zeros((len(table), 5), dtype=np.int64)
    out[:, :3] = table
    out[:, CAPACITY] = table[:, COUNT]
    return out


def block_size(count: int, cap: int, entry: int) -> tuple[int, int]:
    """(capacity, nbytes) of a new block for ``count`` entries of ``entry`` bytes each.

    Spare room of max(8, count / 4) entries, not past ``cap`` unless the posting already
    is (append-only growth), then rounded up to whole pages (the pages' slack is room too).
    """
    capacity = count + max(8, count // 4)
    if count < cap:
        capacity = min(cap, capacity)
    nbytes = (capacity * entry + PAGE - 1) // PAGE * PAGE
    return nbytes // entry, nbytes


def pack_crc(crc_ids: int, crc_vectors: int) -> int:
    """The int64 table value holding both crc32s."""
    value = (int(crc_ids) << 32) | int(crc_vectors)
    return value - (1 << 64) if value >= 1 << 63 else value


def posting_crc(ids: bytes | memoryview, vectors: bytes | memoryview) -> int:
    """The packed crc of a posting's committed bytes (``ids[:count]``, ``vectors[:count]``)."""
    return pack_crc(zlib.crc32(ids), zlib.crc32(vectors))


def aligned_empty(nbytes: int) -> np.ndarray:
    """An uninitialized uint8 buffer whose start is page aligned (for ``O_DIRECT``)."""
    raw = np.empty(nbytes + PAGE, dtype=np.uint8)
    shift = (-raw.ctypes.data) % PAGE
    return raw[shift:shift + nbytes]


def file_header(table: np.ndarray, size: int, dim: int, dtype: str) -> bytes:
    """A build's first page: magic, version, shape and sizes, zero-padded."""
    head = HEADER.pack(MAGIC, VERSION, dim, DTYPES[dtype], len(table), int(table[:, 1].sum()),
                       size)
    return head + bytes(PAGE - len(head))


def posting_body(ids: np.ndarray, vectors: np.ndarray, nbytes: int, dtype) -> bytes:
    """One posting as a build writes it: ids (int64), then vectors, zero-padded to ``nbytes``."""
    body = ids.astype("<i8").tobytes() + vectors.astype(dtype).tobytes()
    return body + bytes(nbytes - len(body))


class PostingWriter:
    """Writes postings in table order and hashes the file as it goes."""

    def __init__(self, path: Path, table: np.ndarray, size: int, dim: int, dtype: str):
        self.path, self.table, self.dim, self.dtype = path, table, dim, np.dtype(dtype)
        self.size, self.next = size, 0
        self.sha = hashlib.sha256()
        self.handle = open(path, "wb")
        self._write(file_header(table, size, dim, dtype))

    def _write(self, data) -> None:
        self.handle.write(data)
        self.sha.update(data)

    def add(self, first: int, last: int, blob: bytes) -> None:
        """Append postings ``first`` .. ``last - 1``, encoded in order by ``posting_body``."""
        if first != self.next or self.handle.tell() != self.table[first, 0] \
                or len(blob) != int(self.table[first:last, 2].sum()):
            raise RuntimeError(f"postings {first}..{last - 1}: layout mismatch")
        self._write(blob)
        self.next = last

    def close(self) -> str:
        """Flush to disk; return the file's sha256."""
        if self.next != len(self.table) or self.handle.tell() != self.size:
            raise RuntimeError("posting file incomplete")
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        return self.sha.hexdigest()


class PostingReader:
    """Positional reads of postings; thread-safe (no shared file position)."""

    def __init__(self, path: Path, table: np.ndarray, dim: int, dtype: str,
                 n_entries: int | None, file_size: int | None = None):
        """``n_entries`` None: an updated generation's file, which grows after it was
        written, so its header is checked for magic, version, dim and dtype only.
        ``file_size``: the size the build wrote (default: the file's size now)."""
        self.path, self.table, self.dim = path, table, dim
        # a 3-column (build) table: every posting is full, capacity = count
        self.capacity = table[:, CAPACITY] if table.shape[1] > 3 else table[:, COUNT]
        self.dtype = np.dtype(dtype)
        self.fd = os.open(path, os.O_RDONLY)
        self._direct_fd: int | None = None
        self.direct_error = ""
        try:
            self._check_header(n_entries, file_size)
        except IndexFormatError:
            os.close(self.fd)
            raise
        self._mapped: np.ndarray | None = None

    def _check_header(self, n_entries: int | None, file_size: int | None) -> None:
        raw = os.pread(self.fd, HEADER.size, 0)
        if len(raw) < HEADER.size:
            raise IndexFormatError(f"{self.path}: too short for a posting file header")
        magic, version, dim, code, postings, entries, size = HEADER.unpack(raw)
        if n_entries is None:
            got, expected = (magic, version, dim, code), (MAGIC, VERSION, self.dim,
                                                          DTYPES[self.dtype.name])
            if got != expected:
                raise IndexFormatError(
                    f"{self.path}: header (magic {magic!r}, version {version}, dim {dim}, "
                    f"dtype {code}) does not match the index metadata {expected} (wrong or "
                    f"corrupted file)")
            return
        if file_size is None:
            file_size = int(os.fstat(self.fd).st_size)
        expected = (MAGIC, VERSION, self.dim, DTYPES[self.dtype.name], len(self.table),
                    n_entries, file_size)
        if (magic, version, dim, code, postings, entries, size) != expected:
            raise IndexFormatError(
                f"{self.path}: header (magic {magic!r}, version {version}, dim {dim}, dtype "
                f"{code}, postings {postings}, entries {entries}, size {size}) does not match "
                f"the index metadata {expected} (wrong, truncated or corrupted file)")

    def direct_fd(self) -> int | None:
        """An ``O_DIRECT`` descriptor, or None where the filesystem refuses it."""
        if self._direct_fd is None and not self.direct_error:
            try:
                self._direct_fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_DIRECT", 0))
                probe = aligned_empty(PAGE)
                os.preadv(self._direct_fd, [probe], 0)
            except OSError as exc:
                self.direct_error = f"O_DIRECT unavailable: {exc.strerror}"
                if self._direct_fd is not None:
                    os.close(self._direct_fd)
                self._direct_fd = None
        return self._direct_fd

    def drop_cache(self) -> None:
        """Ask the kernel to evict this file from the page cache.

        The memory map goes first: mapped pages cannot be evicted, and with the whole file
        mapped each call would walk every resident page of it.
        """
        self._mapped = None
        os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_DONTNEED)

    def read(self, posting: int, buffer: np.ndarray, fd: int | None = None) -> int:
        """Read one posting into ``buffer`` (its padded size); return bytes read."""
        offset, nbytes = self.table[posting, 0], self.table[posting, 2]
        got = os.preadv(self.fd if fd is None else fd, [buffer[:nbytes]], int(offset))
        if got != nbytes:
            raise IndexFormatError(f"{self.path}: short read of posting {posting} "
                                   f"({got} of {nbytes} bytes at {offset}); file truncated?")
        return got

    def mapped(self, posting: int) -> np.ndarray:
        """Zero-copy view of one posting through a read-only memory map of the file.

        Warm searches score postings in place (no ``pread`` copy out of the page cache);
        the file's size was verified when the index was opened.
        """
        if self._mapped is None:
            size = int(os.fstat(self.fd).st_size)
            self._mapped = np.frombuffer(mmap.mmap(self.fd, size, prot=mmap.PROT_READ),
                                         dtype=np.uint8)
        offset, nbytes = self.table[posting, 0], self.table[posting, 2]
        return self._mapped[offset:offset + nbytes]

    def parse(self, posting: int, buffer: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Views (ids, vectors) of a posting read into ``buffer``."""
        count, capacity = int(self.table[posting, 1]), int(self.capacity[posting])
        ids = buffer[:8 * count].view("<i8")
        start = 8 * capacity            # vectors follow the id slots of the whole capacity
        vectors = buffer[start:start + count * self.dim * self.dtype.itemsize]
        return ids, vectors.view(self.dtype).reshape(count, self.dim)

    def close(self) -> None:
        self._mapped = None      # the map closes when the last view is gone
        for fd in (self.fd, self._direct_fd):
            if fd is not None:
                os.close(fd)
        self._direct_fd = None
