"""``LivingIndex``: add, replace, delete and compact passages of a built index in place.

One update = one generation: read and embed the input (nothing touched yet), write the
journal, apply it to every component (doc store rows tagged with the generation, a BM25
segment, dense segments, SPANN's LIRE updates), then rename the new ``manifest.json`` into
place -- the commit point -- and drop the journal. Any failure, or a ``kill -9``, before
the rename leaves the previous generation whole: the next opener rolls the rest back.
See ``docs/index-updates.md``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterable

import numpy as np
from tqdm.auto import tqdm

from index.corpus import check_passages, chunk_passage, refuse_window_id
from index.dense_live import DenseSegments, fold_segments, merge_segments
from index.files import durable_write
from index.journal import (WriterLock, clear_journal, fault_point, recover, rollback,
                           write_journal)
from index.leases import drop_unread, held_generations
from index.living_manifest import (SPANN, committed_generation, merge_files, now_iso,
                                   replace_files, replaced_each_generation, update_summary,
                                   without, without_files)
from index.manifest import MANIFEST, check_files, read_manifest
from index.spann.leases import held_below
from retrievers.docstore_live import LiveDocStore
from retrievers.encoder import passage_text
from retrievers.tokenize import tokenize
from searchagent.config import IndexConfig
from searchagent.errors import SearchAgentError
from searchagent.types import Passage

# what one BM25 commit or compaction reports about itself (not carried to the next one)
PER_GENERATION = ("rows_added", "rows_deleted", "parts_merged")


class LivingIndex:
    """The single writer of an index folder (an exclusive lock is held while open)."""

    def __init__(self, folder: str | Path, docstore: LiveDocStore | None = None,
                 encoder=None, discard_damaged_journal: bool = False):
        self.folder = Path(folder).resolve()
        read_manifest(self.folder)                    # a clear error if this is no index
        self.lock = WriterLock(self.folder)
        try:
            self.docstore = docstore or LiveDocStore(self.folder / "docs.duckdb")
            self._owns_docstore = docstore is None
            self.recovered = recover(self.folder, self.docstore, discard_damaged_journal)
            self.manifest = read_manifest(self.folder)
            # no update on top of a missing or truncated file
            check_files(self.folder, self.manifest.get("files", {}), "size")
            self.config = IndexConfig(**json.loads((self.folder / "config.json").read_text())
                                      .get("index", {}))
        except BaseException:
            self.lock.release()
            raise
        self._encoder = encoder

    @property
    def generation(self) -> int:
        return int(self.manifest.get("generation", 0))

    def updates_since_compaction(self) -> int:
        """Updates committed since the last compaction or the build (as far back as the
        manifest's history of the last 100 goes)."""
        count = 0
        for entry in reversed(self.manifest.get("history", [])):
            if entry["op"] == "compact":
                break
            count += 1
        return count

    def use_encoder(self, encoder) -> None:
        """Embed with ``encoder`` (a model already loaded elsewhere) instead of loading one,
        unless this index already has one."""
        if self._encoder is None:
            self._encoder = encoder

    # -- the three operations -----------------------------------------------------------

    def add(self, passages: Iterable[Passage]) -> dict:
        """Insert new ids, replace existing ones (all their chunks); one generation."""
        documents = list(passages)
        ids = check_passages(documents, windows=self.config.chunk_words > 0)
        chunks = [c for p in documents
                  for c in chunk_passage(p, self.config.chunk_words, self.config.chunk_overlap)]
        replaced = self.docstore.live_rows(ids, chunks=self.config.chunk_words > 0)
        old_rows = sorted(r for rows in replaced.values() for r in rows)
        started = time.perf_counter()
        vectors = self._embed(chunks) if "dense" in self.manifest["components"] else None
        embed_s = round(time.perf_counter() - started, 3)
        summary = self._update("add", chunks, old_rows, vectors)
        return {**summary, "inserted": len(ids) - len(replaced), "replaced": len(replaced),
                "embed_seconds": embed_s}

    def delete(self, ids: Iterable[str]) -> dict:
        """Delete passages by corpus id; unknown ids are reported, not an error (only
        unknown ids: no new generation)."""
        ids = list(ids)
        if self.config.chunk_words > 0:         # a window goes with its document only
            for n, pid in enumerate(ids):
                refuse_window_id(pid, f"ids[{n}]", item=n)
        ids = list(dict.fromkeys(ids))
        found = self.docstore.live_rows(ids, chunks=self.config.chunk_words > 0)
        rows = sorted(r for group in found.values() for r in group)
        missing = [i for i in ids if i not in found]
        if not rows:                    # nothing to delete: no new generation
            return {**update_summary(self.manifest, "delete"), "deleted_ids": 0,
                    "missing_ids": missing}
        summary = self._update("delete", [], rows, None)
        return {**summary, "deleted_ids": len(found), "missing_ids": missing}

    def compact(self, drop_old: bool = False) -> dict:
        """Merge BM25 segments, rewrite SPANN postings without stale entries, drop the
        text of deleted passages. ``drop_old``: also delete the files only older
        generations read (BM25's old segments and bitmaps, SPANN's old posting file with
        its relocated copies, old dense deleted masks). Both stop at the oldest generation
        an open reader holds (``index/leases.py``): what readers read stays (the summary's
        ``kept`` names their generations) for a later compaction (SPANN's files: the next
        update) to remove once they have closed."""
        summary = self._update("compact", [], [], None)
        gen = summary["generation"]
        held = held_generations(self.folder, gen)
        oldest = held[0] if held else gen
        self.docstore.purge(oldest)   # text of rows deleted at or before ``oldest`` only
        if held:
            summary["kept"] = {"held_generations": held, "reason": "open readers hold them"}
        if drop_old:
            summary["removed"] = drop_unread(self.folder, gen, oldest)
        return summary

    # -- one generation -----------------------------------------------------------------

    def _update(self, op: str, added: list[Passage], deleted_rows: list[int],
                vectors: np.ndarray | None) -> dict:
        started = time.perf_counter()
        base, gen = self.generation, self.generation + 1
        counts = self.manifest["counts"]    # rows are never reused, even after a purge
        first_row = max(int(counts.get("rows", counts["passages"])),
                        self.docstore.counts()["rows"])
        rows = np.arange(first_row, first_row + len(added), dtype=np.int64)
        dead = np.asarray(deleted_rows, dtype=np.int64)
        self._mark_docstore_mutable()
        write_journal(self.folder, {"generation": gen, "base_generation": base, "op": op,
                                    "added": len(added), "deleted": len(dead),
                                    "first_row": first_row,
                                    "started_at": now_iso()})
        fault_point("after-journal")
        try:
            self.docstore.apply(gen, first_row, added, dead.tolist())
            fault_point("after-docstore")
            n_rows = first_row + len(added)
            components, files = self._apply_components(op, gen, rows, added, dead, vectors,
                                                       n_rows)
            fault_point("before-commit")
            live = self.docstore.counts()["live"]
            history = self.manifest.get("history", [])[-99:] + [{
                "generation": gen, "op": op, "at": now_iso(), "added": len(added),
                "deleted": len(dead), "seconds": round(time.perf_counter() - started, 3)}]
            manifest = {**self.manifest, "generation": gen, "updated_at": now_iso(),
                        "counts": {"passages": live, "rows": n_rows,     # deleted: dead
                                   "deleted": n_rows - live},        # rows, purged or not
                        "components": components, "files": files, "history": history}
            durable_write(self.folder / MANIFEST,
                          (json.dumps(manifest, indent=2) + "\n").encode())     # commit
        except BaseException as exc:
            # the rename may have happened (an fsync of the folder after it failed): then
            # generation ``gen`` is committed and must keep its files
            committed = committed_generation(self.folder, base)
            rollback(self.folder, self.docstore, committed)
            if committed == gen:
                self.manifest = read_manifest(self.folder)
            if isinstance(exc, OSError):            # disk full, I/O error: say where, and
                where = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p)
                raise SearchAgentError(             # that nothing half-applied stays
                    f"{op} failed: {exc.strerror or exc}{': ' + where if where else ''}; "
                    f"rolled back, {self.folder} is at generation {committed}"
                    f"{' (committed before the failure)' if committed == gen else ''}"
                ) from exc
            raise
        fault_point("after-commit")
        self.manifest = manifest
        clear_journal(self.folder)
        return update_summary(manifest, op, len(added), len(dead), history[-1]["seconds"])

    def _mark_docstore_mutable(self) -> None:
        """Before the first update touches the doc store, the manifest (same generation)
        stops promising its build-time checksum: from now on it changes in place."""
        if not self.manifest["files"].get("docs.duckdb", {}).get("mutable"):
            self.manifest = {**self.manifest, "files": {**self.manifest["files"],
                                                        "docs.duckdb": {"mutable": True}}}
            durable_write(self.folder / MANIFEST,
                          (json.dumps(self.manifest, indent=2) + "\n").encode())
        self.docstore.add_generation_tags()

    def _apply_components(self, op, gen, rows, added, dead, vectors, n_rows):
        components = dict(self.manifest["components"])
        files = {name: entry for name, entry in self.manifest["files"].items()
                 if not replaced_each_generation(name)}
        if "bm25" in components:
            from retrievers.bm25_live import LiveBM25

            bm25 = LiveBM25.open(self.folder / "bm25", components["bm25"].get("generation", 0))
            if op == "compact":
                summary = bm25.compact(gen)
            else:
                if len(added):
                    bm25.add(rows, [tokenize(f"{p.title} {p.text}") for p in tqdm(
                        added, desc="bm25: tokenizing", unit="passage", mininterval=1.0,
                        disable=len(added) < 1000)])
                if len(dead):
                    bm25.delete(dead)
                summary = bm25.commit(gen)
            components["bm25"] = {**without(components["bm25"], PER_GENERATION),
                                  **without_files(summary), "generation": gen}
            files = merge_files(files, "bm25/", summary["files"])
        if "dense" in components:
            dense = components["dense"]
            segments = DenseSegments(self.folder, dense, n_rows)
            if len(added):
                segments.add(rows, vectors)
            if len(dead):
                segments.delete(dead)
            dense, dense_files = segments.commit(gen, n_rows)
            files.update(dense_files)
            if dense["index"]["kind"] == "spann":
                from index.spann.lire import SpannUpdater

                # no space reuse (it removes older generations' files) while a Searcher
                # holds an older generation, even one that has not opened SPANN yet
                updater = SpannUpdater(self.folder / SPANN,
                                       generation=dense["index"].get("generation", 0),
                                       reuse_space=not held_below(self.folder, self.generation))
                if op == "compact":
                    summary = updater.compact(gen)
                else:
                    if len(dead):
                        updater.delete(dead)
                    if len(added):
                        updater.insert(rows, vectors)
                    summary = updater.commit(gen)
                dense["index"] = {**dense["index"], **without_files(summary),
                                  "generation": gen, "bytes_on_disk": sum(
                                      f.get("size", f.get("min_size", 0))
                                      for f in summary["files"].values())}
                files = merge_files(files, SPANN + "/", summary["files"])
            elif op == "compact":           # FAISS: an open adds no segment written before
                dense, folded = fold_segments(self.folder, dense, gen)
                files = replace_files(files, "dense/faiss", folded)
            if op == "compact":
                dense, merged = merge_segments(self.folder, dense, gen)
                files = replace_files(files, ("dense/add-", "dense/segments-"), merged)
            components["dense"] = dense
        fault_point("after-components")
        return components, files

    def _embed(self, passages: list[Passage]) -> np.ndarray:
        if self._encoder is None:
            from retrievers.encoder import open_encoder

            self._encoder = open_encoder(self.folder, self.manifest["components"]["dense"])
        texts = [passage_text(p.title, p.text) for p in passages]
        out = np.empty((len(texts), self._encoder.dim), dtype=np.float32)
        block = max(self.config.batch_size * 4, 256)
        with tqdm(total=len(texts), desc="dense: embedding", unit="passage",
                  mininterval=1.0, disable=len(texts) < block) as bar:
            for start in range(0, len(texts), block):
                out[start:start + block] = self._encoder.encode(texts[start:start + block],
                                                                self.config.batch_size)
                bar.update(min(block, len(texts) - start))
        return out

    def close(self) -> None:
        if self._owns_docstore:
            self.docstore.close()
        self.lock.release()

    def __enter__(self) -> "LivingIndex":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

