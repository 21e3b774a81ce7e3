"""``PostingStore``: the updater's read-write view of one posting file.

Writes follow two rules that keep every committed generation's bytes unchanged:

* an append to a posting with free room (``count < capacity``) fills its free slots in
  place (two ``pwrite``\\ s: the ids, then the vectors); committed tables say the smaller
  count, so no reader looks at those slots;
* anything else (a full posting, a split's halves, a rewrite without stale entries) is a
  new block that only the next generation's table points to: in free space (``reuse``:
  gaps between the blocks of the generation the updater started from, handed over only
  when no reader holds an older one, see ``leases.py``), else at the end of the file.

Nothing is fsynced until ``sync`` (at commit). The store keeps the ids of every posting in
memory (8 bytes an entry) so that valid counts, split and merge checks and the
"is this row already in that posting" test need no reads; vectors are read only when a
posting is rewritten, split, merged or scanned for reassignment.

Each block's crc is kept as two running crc32s (ids, vectors), updated from the appended
bytes. Blocks of the build region (``offset < base_end``) have no crc: the build's sha256
covers them, and they are full (capacity = count), so they are only ever read, then
replaced by a new block.
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np

from index.spann.postings import (CAPACITY, COUNT, DEAD, DTYPES, HEADER, MAGIC, NBYTES,
                                  OFFSET, PAGE, ROW_MASK, VERSION, VERSION_SHIFT, block_size)

EMPTY = np.empty(0, dtype=np.int64)


def valid_mask(ids: np.ndarray, versions: np.ndarray) -> np.ndarray:
    """Entries whose version is their row's current one (deleted rows never match)."""
    return versions[ids & ROW_MASK] == (ids >> VERSION_SHIFT)


class PostingStore:
    def __init__(self, path: Path, table: np.ndarray, dim: int, dtype: str, end: int,
                 base_end: int, load_ids: bool = True):
        self.path, self.dim = Path(path), dim
        self.dtype = np.dtype(dtype)
        self.row_bytes = dim * self.dtype.itemsize
        self.entry = 8 + self.row_bytes
        self.fd = os.open(self.path, os.O_RDWR)
        if os.fstat(self.fd).st_size > end:       # left by an update that never committed
            os.ftruncate(self.fd, end)
        self.end, self.base_end = int(end), int(base_end)
        self.h = len(table)
        self._table = np.array(table, dtype=np.int64)
        self.crc = np.zeros((self.h, 2), dtype=np.int64)          # running crc32s
        packed = self._table[:, 4].astype(np.uint64)
        self.crc[:, 0] = (packed >> np.uint64(32)).astype(np.int64)
        self.crc[:, 1] = (packed & np.uint64(0xFFFFFFFF)).astype(np.int64)
        self.known = self._table[:, OFFSET] >= self.base_end       # crc state usable
        self.written = 0
        self.free = np.zeros((0, 2), dtype=np.int64)               # (offset, nbytes) gaps
        self.ids: list[np.ndarray] = [EMPTY] * self.h
        if load_ids:
            for p in np.flatnonzero(self._table[:, COUNT] > 0):
                off, count = int(self._table[p, OFFSET]), int(self._table[p, COUNT])
                self.ids[p] = np.frombuffer(os.pread(self.fd, 8 * count, off), "<i8").copy()

    @classmethod
    def create(cls, path: Path, dim: int, dtype: str) -> "PostingStore":
        """An empty posting file (header page only) for a compaction."""
        head = HEADER.pack(MAGIC, VERSION, dim, DTYPES[dtype], 0, 0, PAGE)
        with open(path, "wb") as handle:
            handle.write(head + bytes(PAGE - len(head)))
        return cls(path, np.zeros((0, 5), np.int64), dim, dtype, PAGE, 0, load_ids=False)

    @property
    def table(self) -> np.ndarray:
        """The current table (crc column packed), a copy."""
        out = self._table[:self.h].copy()
        crc = self.crc[:self.h].astype(np.uint64)
        packed = ((crc[:, 0] << np.uint64(32)) | crc[:, 1]).view(np.int64)
        out[:, 4] = np.where(self.known[:self.h] & (out[:, CAPACITY] != DEAD), packed, 0)
        return out

    def count(self, p: int) -> int:
        return int(self._table[p, COUNT])

    def live(self) -> np.ndarray:
        return self._table[:self.h, CAPACITY] != DEAD

    def valid_counts(self, versions: np.ndarray) -> np.ndarray:
        """Valid entries of every posting (0 for dead ones)."""
        lengths = np.array([len(ids) for ids in self.ids], dtype=np.int64)
        if lengths.sum() == 0:
            return np.zeros(self.h, dtype=np.int64)
        valid = valid_mask(np.concatenate(self.ids), versions).astype(np.int64)
        sums = np.concatenate([[0], np.cumsum(valid)])
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        return sums[bounds[1:]] - sums[bounds[:-1]]

    def read(self, p: int, versions: np.ndarray | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
        """(ids, vectors in the stored dtype) of posting ``p``; only the valid entries
        when ``versions`` is given."""
        off, count, _, cap, _ = self._table[p].tolist()
        if count == 0:
            return EMPTY, np.empty((0, self.dim), self.dtype)
        raw = os.pread(self.fd, 8 * cap + count * self.row_bytes, off)
        ids = np.frombuffer(raw, "<i8", count)
        vectors = np.frombuffer(raw, self.dtype, count * self.dim, 8 * cap)
        vectors = vectors.reshape(count, self.dim)
        if versions is not None:
            keep = valid_mask(ids, versions)
            if not keep.all():
                return ids[keep], vectors[keep]
        return ids, vectors

    def append(self, p: int, ids: np.ndarray, vectors: np.ndarray) -> bool:
        """Fill free slots of ``p`` in place; False (nothing written) when they don't fit."""
        off, count, _, cap, _ = self._table[p].tolist()
        if count + len(ids) > cap or not self.known[p]:
            return False
        id_bytes = np.ascontiguousarray(ids, dtype="<i8").tobytes()
        vec_bytes = np.ascontiguousarray(vectors, dtype=self.dtype).tobytes()
        os.pwrite(self.fd, id_bytes, off + 8 * count)
        os.pwrite(self.fd, vec_bytes, off + 8 * cap + count * self.row_bytes)
        self.crc[p, 0] = zlib.crc32(id_bytes, int(self.crc[p, 0]))
        self.crc[p, 1] = zlib.crc32(vec_bytes, int(self.crc[p, 1]))
        self._table[p, COUNT] = count + len(ids)
        self.ids[p] = np.concatenate([self.ids[p], ids])
        self.written += len(id_bytes) + len(vec_bytes)
        return True

    def rewrite(self, p: int, ids: np.ndarray, vectors: np.ndarray, cap: int) -> None:
        """Write ``p`` as a new block (free space or the end of the file) with room to grow."""
        count = len(ids)
        capacity, nbytes = block_size(count, cap, self.entry)
        block = np.zeros(nbytes, dtype=np.uint8)
        id_bytes = np.ascontiguousarray(ids, dtype="<i8").view(np.uint8).ravel()
        vec_bytes = np.ascontiguousarray(vectors, dtype=self.dtype).view(np.uint8).ravel()
        block[:len(id_bytes)] = id_bytes
        block[8 * capacity:8 * capacity + len(vec_bytes)] = vec_bytes
        offset = self._allocate(nbytes)
        os.pwrite(self.fd, block, offset)
        self._table[p] = (offset, count, nbytes, capacity, 0)
        self.crc[p] = (zlib.crc32(id_bytes), zlib.crc32(vec_bytes))
        self.known[p] = True
        self.ids[p] = np.array(ids, dtype=np.int64)
        self.written += nbytes

    def _allocate(self, nbytes: int) -> int:
        """The offset of a new block: the smallest free gap that fits, else the end."""
        fits = np.flatnonzero(self.free[:, 1] >= nbytes)
        if not len(fits):
            self.end += nbytes
            return self.end - nbytes
        i = int(fits[np.argmin(self.free[fits, 1])])
        offset = int(self.free[i, 0])
        if self.free[i, 1] == nbytes:
            self.free = np.delete(self.free, i, axis=0)
        else:
            self.free[i] += (nbytes, -nbytes)
        return offset

    def reuse(self) -> int:
        """Hand the gaps between this (committed) table's live blocks to ``rewrite``; call
        only when no reader holds an older generation. Gaps in the build region stay
        untouched while the committed generation still relies on the build's sha256 of
        it: its live blocks get crcs instead, so the next generation no longer does, and
        the updater after it reuses them. Returns the free bytes."""
        live = np.flatnonzero(self._table[:self.h, CAPACITY] != DEAD)
        blocks = self._table[live][:, [OFFSET, NBYTES]]
        blocks = blocks[np.argsort(blocks[:, 0])]
        starts = np.concatenate([[PAGE], blocks[:, 0] + blocks[:, 1]])
        stops = np.concatenate([blocks[:, 0], [self.end]])
        starts = np.maximum(starts, self.base_end)
        gaps = np.stack([starts, stops - starts], axis=1)
        self.free = gaps[gaps[:, 1] > 0]
        if self.base_end:
            for p in live[~self.known[live]]:
                ids, vectors = self.read(int(p))
                self.crc[p] = (zlib.crc32(ids.tobytes()), zlib.crc32(vectors.tobytes()))
                self.known[p] = True
            self.base_end = 0
        return int(self.free[:, 1].sum())

    def add(self, ids: np.ndarray, vectors: np.ndarray, cap: int) -> int:
        """A new posting (for a new head); returns its number."""
        if self.h == len(self._table):
            size = max(16, 2 * self.h)
            self._table = np.concatenate([self._table, np.zeros((size - self.h, 5), np.int64)])
            self.crc = np.concatenate([self.crc, np.zeros((size - self.h, 2), np.int64)])
            self.known = np.concatenate([self.known, np.zeros(size - self.h, bool)])
        p = self.h
        self.h += 1
        self.ids.append(EMPTY)
        self.rewrite(p, ids, vectors, cap)
        return p

    def kill(self, p: int) -> None:
        self._table[p] = (0, 0, 0, DEAD, 0)
        self.ids[p] = EMPTY

    def sync(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        if getattr(self, "fd", -1) >= 0:
            os.close(self.fd)
            self.fd = -1

    __del__ = close          # an updater dropped without close() must not leak its fd
