"""Open an index folder once and hand out retrievers over it."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from functools import cached_property
from pathlib import Path

from index.faiss_index import FaissIndex
from index.leases import leased_manifest
from index.manifest import built_index_config
from retrievers.bm25 import BM25Index, BM25Retriever
from retrievers.dense import DenseRetriever
from retrievers.docstore import DocStore
from retrievers.encoder import Encoder, open_encoder
from retrievers.hybrid import HybridRetriever
from retrievers.windows import CollapsingRetriever
from searchagent.config import Config, RetrievalConfig
from searchagent.errors import InputError, SearchAgentError, require_text
from searchagent.types import Hit, Retriever

MODES = ("bm25", "dense", "hybrid")


class Searcher:
    """A verified, opened index: doc store plus lazily loaded BM25 / dense components."""

    def __init__(self, folder: str | Path, config: Config | None = None,
                 verify: str | None = None, docstore: DocStore | None = None):
        self.folder = Path(folder)
        self.config = config or Config()
        self.verify = verify or self.config.index.verify
        # leased from reading the manifest to ``close``: an update removes nothing this
        # generation reads while it is held (components open lazily; index/leases.py)
        self.manifest, self.lease = leased_manifest(self.folder, self.verify)
        self.generation = int(self.manifest.get("generation", 0))
        self.components = self.manifest.get("components", {})
        self._owns_docstore = docstore is None
        self.docstore = docstore or DocStore(self.folder / "docs.duckdb")

    @cached_property
    def bm25(self) -> BM25Retriever:
        self._require("bm25")
        generation = self.components["bm25"].get("generation", 0)
        if generation:
            from retrievers.bm25_live import LiveBM25

            return BM25Retriever(LiveBM25.open(self.folder / "bm25", generation),
                                 self.docstore)
        return BM25Retriever(BM25Index.load(self.folder / "bm25"), self.docstore)

    @cached_property
    def windows_per_doc(self) -> int:
        """``retrieval.windows_per_doc`` where the index was built in windows
        (``index.chunk_words``; ``retrievers.windows``), else 0: nothing to collapse."""
        chunked = built_index_config(self.folder).get("chunk_words")
        return self.config.retrieval.windows_per_doc if chunked else 0

    @cached_property
    def encoder(self) -> Encoder:
        self._require("dense")
        return open_encoder(self.folder, self.components["dense"])

    @cached_property
    def vector_index(self):
        self._require("dense")
        info = self.components["dense"]["index"]
        if info["kind"] == "spann":
            from index.spann import SpannIndex

            # verify_index above hashed the small files; SPANN checks its growing posting
            # file itself (the build's sha256, then a crc32 per posting written since)
            return SpannIndex.open(self.folder / "dense" / "spann", verify=self.verify,
                                   generation=info.get("generation", 0))
        from index.dense_live import LiveFaiss, faiss_file

        dense = self.components["dense"]
        base = FaissIndex.load(self.folder / faiss_file(dense), info["factory"])
        if dense.get("segments") or dense.get("deleted", {}).get("count"):
            return LiveFaiss(base, self.folder, dense)
        return base

    def open_vector_index_after(self, previous: "Searcher") -> None:
        """Open this generation's vector index from ``previous``'s (an earlier generation of
        this folder) where that is cheaper: FAISS copies it and adds only the vectors
        written since (``LiveFaiss.following``); otherwise it opens as usual."""
        self._require("dense")
        earlier = previous.__dict__.get("vector_index")
        if earlier is not None and self.components["dense"]["index"]["kind"] != "spann":
            from index.dense_live import LiveFaiss

            following = LiveFaiss.following(earlier, self.folder, self.components["dense"])
            if following is not None:
                self.__dict__["vector_index"] = following
        self.vector_index

    @cached_property
    def stored_vectors(self):
        """Every row's stored embedding (``index.dense_live.StoredVectors``: the build's
        and the updates' segments), or None where the folder keeps none."""
        from index.dense_live import EMBEDDINGS, StoredVectors

        self._require("dense")
        if not (self.folder / EMBEDDINGS).is_file():
            return None
        return StoredVectors(self.folder, self.components["dense"])

    @cached_property
    def dense(self) -> DenseRetriever:
        return DenseRetriever(self.encoder, self.vector_index, self.docstore,
                              _search_params(self.components["dense"]["index"],
                                             self.config.retrieval))

    def retriever(self, mode: str | None = None, windows: bool = True) -> Retriever:
        """The ``mode`` retriever, keeping at most ``windows_per_doc`` windows of one
        document where the index has windows (``windows=False``: every window, for a
        caller that fuses first and collapses after)."""
        found = self._retriever(mode)
        return CollapsingRetriever(found, self.windows_per_doc) \
            if self.windows_per_doc and windows else found

    def check_mode(self, mode: str | None) -> str:
        """``mode`` (default: the config's) once this index can serve it, else an
        InputError naming ``mode`` (no component is loaded)."""
        mode = mode or self.config.retrieval.mode
        if mode not in MODES:
            raise InputError(f"unknown retrieval mode {mode!r} (choose from "
                             f"{', '.join(MODES)})", field="mode")
        if mode != "hybrid" and mode not in self.components:
            raise InputError(f"mode {mode!r}: index {self.folder} was built without {mode}; "
                             f"it has {', '.join(self.components) or 'nothing'} (mode "
                             "'hybrid' uses whatever it has)", field="mode")
        return mode

    def _retriever(self, mode: str | None) -> Retriever:
        mode = self.check_mode(mode)
        if mode == "bm25":
            return self.bm25
        if mode == "dense":
            return self.dense
        parts = [getattr(self, name) for name in ("bm25", "dense") if name in self.components]
        if len(parts) == 1:             # hybrid of one retriever: its own ranks and scores
            return parts[0]
        return HybridRetriever(parts, rrf_k=self.config.retrieval.rrf_k)

    def using(self) -> AbstractContextManager["Searcher"]:
        """This searcher, as ``LiveSearcher.using`` gives the current generation's: one
        search reads every component from one generation."""
        return nullcontext(self)

    def search(self, query: str, k: int = 10, mode: str | None = None) -> list[Hit]:
        require_text(query, "query")
        if k <= 0:
            raise InputError(f"k must be positive, got {k}", field="k")
        counts = self.manifest.get("counts", {})      # no retriever is asked for more rows
        rows = int(counts.get("rows", counts.get("passages", k)))   # than the index has
        return self.retriever(mode).search(query, min(k, max(1, rows)))

    def _require(self, component: str) -> None:
        if component not in self.components:
            raise SearchAgentError(f"index {self.folder} was built without {component}; "
                                   f"it has: {', '.join(self.components) or 'nothing'}")

    def close(self) -> None:
        index = self.__dict__.get("vector_index")
        if index is not None and hasattr(index, "close"):
            index.close()
        if self._owns_docstore:
            self.docstore.close()
        self.lease.release()


def _search_params(info: dict, cfg: RetrievalConfig) -> dict:
    factory = info.get("factory", "")
    if "HNSW" in factory:
        return {"efSearch": cfg.hnsw_ef_search}
    if "IVF" in factory:
        return {"nprobe": cfg.ivf_nprobe}
    return {}
