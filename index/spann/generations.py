"""Generations of an updated SPANN folder: their files, opening, rollback and cleanup.

Generation 0 is the build (``spann.json``, ``table.npy``, ``heads.npy``, ``postings.bin``).
Generation N >= 1 (written by ``SpannUpdater.commit``) adds, each written once and never
changed::

    table-N.npy     int64 (h, 5): offset, count, nbytes, capacity, crc (see postings.py)
    heads-N.npy     float32 (h, d): every head made so far, dead ones included
    versions-N.npy  uint8 (n_rows,): a row's version (low 7 bits) and deleted bit (0x80)
    heads-N.faiss   the head graph (HNSW head index only)
    gen-N.json      metadata, written last (temp file, fsync, rename): its presence
                    makes the generation complete

The posting file is shared: ``gen-N.json`` names it (``postings.bin``, or
``postings-M.bin`` after a compaction at generation M) and its committed ``end``; later
generations append past that end, fill free slots past the committed counts, or fill the
gaps between generation N's blocks, so generation N's bytes never change. (Gaps of N are
reused only once no reader holds a generation older than N, whose files go first:
``leases.py``.) Bytes of the build region (``base``: the build's ``postings.bin``) are
proven by the build's sha256 of that prefix until a generation gives its live blocks crcs
(``base`` null) and the gaps there are reused; every other posting by its crc.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import re
from pathlib import Path

import numpy as np

from index.files import durable_save, durable_write, file_entry
from index.manifest import check_files as check_file_table
from index.spann.builder import FORMAT, FORMAT_VERSION, META
from index.spann.postings import CAPACITY, COUNT, DEAD, NBYTES, OFFSET, PAGE, posting_crc
from searchagent.errors import IndexFormatError
from searchagent.files import UNREADABLE, fsync_dir

_GEN_FILE = re.compile(r"(gen|table|heads|versions|postings)-(\d+)\.(json|npy|faiss|bin)")


def gen_files(n: int, hnsw: bool) -> dict[str, str]:
    names = {"table": f"table-{n}.npy", "heads": f"heads-{n}.npy",
             "versions": f"versions-{n}.npy"}
    if hnsw:
        names["graph"] = f"heads-{n}.faiss"
    return names


def meta_name(n: int) -> str:
    return f"gen-{n}.json"


def committed(folder: Path) -> list[int]:
    """Generations >= 1 whose ``gen-N.json`` exists (complete), ascending."""
    found = (_GEN_FILE.fullmatch(p.name) for p in Path(folder).glob("gen-*.json"))
    return sorted(int(m.group(2)) for m in found if m and m.group(1) == "gen")


def latest(folder: Path) -> int:
    gens = committed(folder)
    return gens[-1] if gens else 0


def read_meta(folder: Path, n: int) -> dict:
    path = Path(folder) / meta_name(n)
    if not path.is_file():
        raise IndexFormatError(f"spann generation {n} not found: no {path}")
    try:
        meta = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexFormatError(f"corrupt {path}: {exc}") from exc
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION \
            or meta.get("generation") != n:
        raise IndexFormatError(f"{path}: not generation {n} of a {FORMAT!r} version "
                               f"{FORMAT_VERSION} index")
    return meta


def write_generation(folder: Path, n: int, meta: dict, table: np.ndarray, heads: np.ndarray,
                     versions: np.ndarray, graph=None) -> dict:
    """Write generation ``n`` durably; ``gen-N.json`` last. Returns its metadata, whose
    ``files`` lists what this generation reads, for the index manifest."""
    names = gen_files(n, graph is not None)
    durable_save(folder / names["table"], table)
    durable_save(folder / names["heads"], heads)
    durable_save(folder / names["versions"], versions)
    if graph is not None:
        from index.faiss_index import import_faiss

        durable_write(folder / names["graph"], import_faiss().serialize_index(graph).tobytes())
    files = {name: file_entry(folder / name) for name in names.values()}
    meta = {**meta, "generation": n, "files": files}
    durable_write(folder / meta_name(n), (json.dumps(meta, indent=2) + "\n").encode())
    listed = {**files, meta_name(n): file_entry(folder / meta_name(n)),
              META: file_entry(folder / META),          # the folder's identity: every
              meta["postings"]["file"]: {"min_size": meta["postings"]["end"]}}   # open reads it
    return {**meta, "files": listed}


def load(folder: Path, n: int, verify: str) -> dict:
    """Arrays of a verified generation ``n >= 1``: a dict with meta, table, heads, versions,
    graph (or None), postings (path), end, base_end."""
    meta = read_meta(folder, n)
    files = meta.get("files", {})
    hnsw = meta.get("head_index") == "hnsw"
    names = gen_files(n, hnsw)
    for name in names.values():
        if name not in files:
            raise IndexFormatError(f"{folder / meta_name(n)} does not list {name}")
    check_file_table(folder, files, verify, what="spann index", source=meta_name(n))
    try:
        table = np.load(folder / names["table"], allow_pickle=False)
        heads = np.load(folder / names["heads"], allow_pickle=False)
        versions = np.load(folder / names["versions"], allow_pickle=False)
    except UNREADABLE as exc:
        raise IndexFormatError(f"{folder}: unreadable generation {n} array: {exc}") from exc
    graph = None
    if hnsw:
        from index.faiss_index import import_faiss

        try:
            graph = import_faiss().read_index(str(folder / names["graph"]))
        except RuntimeError as exc:
            raise IndexFormatError(f"{folder / names['graph']} unreadable: {exc}") from exc
        if graph.ntotal != len(heads):
            raise IndexFormatError(f"{folder / names['graph']} holds {graph.ntotal} heads, "
                                   f"{names['heads']} {len(heads)}")
    postings = folder / meta["postings"]["file"]
    base = meta["postings"].get("base")
    state = {"meta": meta, "table": table, "heads": heads, "versions": versions,
             "graph": graph, "postings": postings, "end": int(meta["postings"]["end"]),
             "base_end": int(base["size"]) if base else 0}
    _check_structure(folder, n, state)
    if verify == "full":
        _check_contents(state)
    return state


def _check_structure(folder: Path, n: int, s: dict) -> None:
    meta, table, where = s["meta"], s["table"], folder / f"table-{n}.npy"
    h, dim = int(meta["n_heads"]), int(meta["dim"])
    if table.shape != (h, 5) or s["heads"].shape != (h, dim) \
            or s["versions"].shape != (int(meta["n_rows"]),) or s["versions"].dtype != np.uint8:
        raise IndexFormatError(f"{folder}: generation {n} arrays (table {table.shape}, heads "
                               f"{s['heads'].shape}, versions {s['versions'].shape}) do not "
                               f"match {h} heads of dimension {dim}, {meta['n_rows']} rows")
    if not s["postings"].is_file() or s["postings"].stat().st_size < s["end"]:
        raise IndexFormatError(f"spann index file {s['postings']} is missing or shorter than "
                               f"{s['end']} bytes (truncated)")
    entry = 8 + dim * np.dtype(meta["params"]["dtype"]).itemsize
    dead = table[:, CAPACITY] == DEAD
    live = table[~dead]
    off, count, nbytes, cap = (live[:, c] for c in (OFFSET, COUNT, NBYTES, CAPACITY))
    order = np.argsort(off)
    ends = (off + nbytes)[order]
    bad = ((off % PAGE != 0).any() or (nbytes % PAGE != 0).any() or (off < PAGE).any()
           or (count < 0).any() or (count > cap).any() or (cap * entry > nbytes).any()
           or (ends > s["end"]).any() or (ends[:-1] > off[order][1:]).any()
           or (table[dead, COUNT] != 0).any())
    if bad:
        raise IndexFormatError(f"{where}: offsets/sizes are inconsistent (corrupted)")
    if int(count.sum()) != int(meta["n_entries"]) or int(dead.sum()) != meta["n_dead_heads"]:
        raise IndexFormatError(f"{where}: {int(count.sum())} entries and {int(dead.sum())} "
                               f"dead heads, {meta_name(n)} says {meta['n_entries']} and "
                               f"{meta['n_dead_heads']}")


def prefix_sha256(path: Path, size: int) -> str:
    """sha256 of the first ``size`` bytes of ``path``."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while size > 0:
            block = handle.read(min(size, 1 << 22))
            if not block:
                break
            digest.update(block)
            size -= len(block)
    return digest.hexdigest()


def _check_contents(s: dict) -> None:
    """The build region's sha256, then every other live posting's crc."""
    meta, table, path = s["meta"], s["table"], s["postings"]
    itemsize = int(meta["dim"]) * np.dtype(meta["params"]["dtype"]).itemsize
    with open(path, "rb") as handle:
        if s["base_end"]:
            if prefix_sha256(path, s["base_end"]) != meta["postings"]["base"]["sha256"]:
                raise IndexFormatError(f"spann index file {path}: the build's region (first "
                                       f"{s['base_end']} bytes) fails its sha256 check "
                                       f"(corrupted)")
        view = memoryview(mmap.mmap(handle.fileno(), s["end"], prot=mmap.PROT_READ))
        for p in np.flatnonzero((table[:, CAPACITY] != DEAD)
                                & (table[:, OFFSET] >= s["base_end"])):
            off, count, _, cap, crc = (int(v) for v in table[p])
            ids = view[off:off + 8 * count]
            vectors = view[off + 8 * cap:off + 8 * cap + count * itemsize]
            if posting_crc(ids, vectors) != crc:
                raise IndexFormatError(f"spann index file {path}: posting {p} (offset "
                                       f"{off}, {count} entries) fails its crc32 check "
                                       f"(corrupted)")


def _postings_ends(folder: Path, gens: list[int]) -> dict[str, int]:
    """The largest committed end of each posting file among ``gens`` (0 = the build)."""
    ends: dict[str, int] = {}
    for n in gens:
        if n == 0:
            try:
                size = json.loads((folder / META).read_text())["files"]["postings.bin"]["size"]
            except (OSError, ValueError, KeyError):
                continue
            ends["postings.bin"] = max(ends.get("postings.bin", 0), int(size))
            continue
        try:
            meta = json.loads((folder / meta_name(n)).read_text())
        except (OSError, ValueError):
            continue
        name = meta["postings"]["file"]
        ends[name] = max(ends.get(name, 0), int(meta["postings"]["end"]))
    return ends


def rollback(folder: str | Path, committed_generation: int) -> list[str]:
    """Drop every trace of generations above ``committed_generation``: their files go
    (``gen-N.json`` first, so a crash half-way leaves nothing that looks complete), temp
    files go, and posting files are truncated to the largest end a kept generation
    records. Returns the names removed or truncated."""
    folder = Path(folder)
    done: list[str] = []
    later = sorted((p for p in folder.iterdir() if (m := _GEN_FILE.fullmatch(p.name))
                    and int(m.group(2)) > committed_generation),
                   key=lambda p: not p.name.startswith("gen-"))
    for path in later:
        path.unlink()
        done.append(path.name)
    for path in folder.glob(".*.tmp-*"):
        path.unlink()
        done.append(path.name)
    kept = [0] + [n for n in committed(folder) if n <= committed_generation]
    for name, end in _postings_ends(folder, kept).items():
        path = folder / name
        if path.is_file() and path.stat().st_size > end:
            with open(path, "r+b") as handle:
                handle.truncate(end)
                handle.flush()
                os.fsync(handle.fileno())
            done.append(f"{name} (truncated to {end})")
    fsync_dir(folder)
    return done


def cleanup(folder: str | Path, keep_generation: int) -> list[str]:
    """Remove the files only generations below ``keep_generation`` read (``spann.json``,
    the folder's identity, stays). Returns the names removed."""
    folder = Path(folder)
    keep = [n for n in committed(folder) if n >= keep_generation]
    if keep_generation > 0 and keep_generation not in keep:
        raise IndexFormatError(f"{folder}: generation {keep_generation} is not committed")
    needed = set(_postings_ends(folder, keep + ([0] if keep_generation == 0 else [])))
    removed = []
    for path in sorted(folder.iterdir()):
        m = _GEN_FILE.fullmatch(path.name)
        old = (m is not None and m.group(1) != "postings" and int(m.group(2)) < keep_generation) \
            or (keep_generation > 0 and path.name in ("table.npy", "heads.npy", "heads.faiss"))
        unread = path.name.startswith("postings") and path.suffix == ".bin" \
            and path.name not in needed
        if old or unread:
            path.unlink()
            removed.append(path.name)
    fsync_dir(folder)
    return removed
