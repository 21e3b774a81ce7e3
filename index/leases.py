"""Reader leases on a whole index folder: which generations some ``Searcher`` still reads.

A ``Searcher`` opens its components lazily, at the generation of the manifest it read (BM25
on its first BM25 search, the vector index on its first dense one), so from reading the
manifest until ``close`` it holds a shared lease on ``INDEX_DIR/leases/gen-N.lock`` (the
``flock`` protocol of ``index/spann/leases.py``, any process). ``LivingIndex`` removes
what only older generations read (``compact(drop_old=True)``'s files: ``drop_unread``;
the text ``compact`` purges; the SPANN space an update reuses) only below the oldest
generation a reader holds (``held_generations``).

``leased_manifest`` takes the lease, then reads the manifest again: the same generation
means none later had committed, so a writer that commits one afterwards sees the lease
before it removes anything; otherwise it starts over at the newer generation.
"""

from __future__ import annotations

from pathlib import Path

from index.living_manifest import SPANN
from index.manifest import read_manifest, verify_index
from index.spann.leases import Lease, held_below
from searchagent.errors import SearchAgentError

TRIES = 5


def leased_manifest(folder: Path, verify: str) -> tuple[dict, Lease]:
    """The verified manifest (``verify_index``) and a lease on its generation."""
    for _ in range(TRIES):
        manifest = verify_index(folder, verify)
        generation = int(manifest.get("generation", 0))
        lease = Lease(folder, generation)
        if int(read_manifest(folder).get("generation", 0)) == generation:
            return manifest, lease
        lease.release()
    raise SearchAgentError(f"{folder}: a new generation committed each of {TRIES} times "
                           f"while opening it; try again")


def held_generations(folder: Path, generation: int) -> list[int]:
    """Generations below ``generation`` that a reader holds: a ``Searcher``, or a SPANN
    index opened on its own (``dense/spann/leases``). Ascending, without repeats."""
    held = held_below(folder, generation)
    if (folder / SPANN).is_dir():
        held += held_below(folder / SPANN, generation)
    return sorted(set(held))


def drop_unread(folder: Path, generation: int, oldest: int) -> list[str]:
    """Delete the files no generation from ``oldest`` to ``generation`` (committed) reads:
    BM25's segments and bitmaps, SPANN's posting files and arrays, dense deleted masks,
    FAISS files and vector segments a later compaction folded or merged. Returns their
    paths, relative to ``folder``."""
    removed = []
    if (folder / "bm25" / f"gen-{generation}.json").is_file():
        from retrievers.bm25_files import prune

        removed += ["bm25/" + name for name in prune(folder / "bm25", generation, oldest)]
    if (folder / SPANN).is_dir():
        from index.spann.generations import cleanup

        removed += [f"{SPANN}/{name}" for name in cleanup(folder / SPANN, oldest)]
    from index.dense_live import unread_dense_files

    for path in unread_dense_files(folder, oldest):
        path.unlink()
        removed.append(f"dense/{path.name}")
    return removed
