"""The offline build: corpus JSONL -> INDEX_DIR (doc store, BM25, embeddings, vector index).

Every stage shows a progress bar; the whole build happens in a temporary folder that is
renamed into place only when the manifest (with checksums) is written.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from index.corpus import file_sha256, load_corpus, open_text
from index.dense_live import EMBEDDINGS
from index.faiss_index import FaissIndex, build_faiss, check_factory, check_trainable
from index.manifest import atomic_folder, write_manifest
from retrievers.bm25_build import build_bm25_files
from retrievers.docstore import BUILD_READ_MEMORY_LIMIT, DocStore
from retrievers.encoder import Encoder, cache_folder, passage_text
from retrievers.encoder_backends import cache_root
from retrievers.tokenize import tokenize
from searchagent import __version__
from searchagent.config import Config, IndexConfig
from searchagent.errors import InputError
from searchagent.models import embedder_dim, embedder_path

FAISS_FILE = "dense/faiss.index"
SPANN_POSTINGS = "dense/spann/postings.bin"   # grows under updates; SPANN checks its bytes


def build_index(corpus: str | Path, out: str | Path, config: Config | None = None,
                overwrite: bool = False, engine: str = "local", ray_address: str | None = None,
                num_gpus: int = 0, num_cpus: int | None = None) -> dict:
    """Build every configured component; return the manifest. ``engine="ray"`` builds the
    same folder on Ray Data (``index.build_ray``; the other arguments are Ray's)."""
    config = config or Config()
    cfg = config.index
    if not (cfg.bm25 or cfg.dense):
        raise InputError("nothing to build: enable bm25 and/or dense", field="index")
    if cfg.dtype not in ("float16", "float32"):
        raise InputError("must be float16 or float32", field="index.dtype")
    if cfg.chunk_overlap and not cfg.chunk_words:
        raise InputError("has no effect without index.chunk_words (passages are kept whole)",
                         field="index.chunk_overlap")
    open_text(corpus).close()           # an unreadable corpus or a missing model: say so
    if str(out).strip() and Path(out).resolve() in Path(corpus).resolve().parents:
        raise InputError("the corpus is inside the output folder, which a build replaces",
                         path=str(corpus))
    if cfg.dense:                       # before any work
        embedder_path(cfg.dense_model)
        dim = embedder_dim(cfg.dense_model)     # from the model's files, without loading it
        if cfg.faiss != "spann" and dim is not None:
            check_factory(cfg.faiss, dim)
    if engine == "ray":
        from index.build_ray import build_index_ray

        return build_index_ray(corpus, out, config, overwrite, address=ray_address,
                               num_gpus=num_gpus, num_cpus=num_cpus)
    if engine != "local":
        raise InputError("must be local or ray", field="engine")
    corpus = Path(corpus)
    timings: dict[str, float] = {}
    components: dict[str, dict] = {}
    with atomic_folder(out, overwrite=overwrite) as tmp:
        start = time.perf_counter()
        count = load_corpus(corpus, tmp / "docs.duckdb", cfg.chunk_words, cfg.chunk_overlap)
        timings["docstore"] = time.perf_counter() - start
        encoder = None
        if cfg.dense:                              # checked before anything is embedded
            start = time.perf_counter()
            if cfg.faiss != "spann":
                check_trainable(cfg.faiss, count)
            encoder = build_encoder(cfg, tmp)
            if cfg.faiss != "spann":
                check_factory(cfg.faiss, encoder.dim)    # a folder that did not say its size
            timings["encoder"] = time.perf_counter() - start
        docstore = DocStore(tmp / "docs.duckdb", memory_limit=BUILD_READ_MEMORY_LIMIT)
        try:
            if cfg.bm25:
                start = time.perf_counter()
                components["bm25"] = _build_bm25(docstore, tmp / "bm25", cfg)
                timings["bm25"] = time.perf_counter() - start
            if cfg.dense:
                start = time.perf_counter()
                components["dense"] = _embed(docstore, tmp / EMBEDDINGS, cfg, encoder)
                timings["embed"] = time.perf_counter() - start
                start = time.perf_counter()
                components["dense"]["index"] = _build_vector_index(tmp, cfg)
                timings["vector_index"] = time.perf_counter() - start
        finally:
            docstore.close()
        manifest = finish_build(tmp, config, corpus, count, components, timings)
    return manifest


def finish_build(folder: Path, config: Config, corpus: Path, count: int, components: dict,
                 timings: dict[str, float], **extra) -> dict:
    """Write ``config.json`` and the manifest of a built folder (``extra``: what an engine
    adds, e.g. Ray's version); return the manifest."""
    config.write(folder / "config.json")
    return write_manifest(folder, {
        "searchagent_version": __version__,
        "built_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **extra,
        "corpus": {"path": str(corpus.resolve()), "sha256": file_sha256(corpus)},
        "counts": {"passages": count},
        "components": components,
        "build_seconds": {k: round(v, 3) for k, v in timings.items()},
    }, append_only=(SPANN_POSTINGS,))


def _build_bm25(docstore: DocStore, folder: Path, cfg: IndexConfig) -> dict:
    """``BM25Index.build(...).save(folder)``, streamed through disk (``bm25_build``)."""
    tokens = (tokenize(f"{title} {text}") for _, title, text in docstore.iter_texts())
    return build_bm25_files(tokens, folder, k1=cfg.bm25_k1, b=cfg.bm25_b, total=docstore.size)


def build_encoder(cfg: IndexConfig, index_dir: Path) -> Encoder:
    """The build's encoder (its exported backend cached in ``index_dir``; ``auto``
    measures and decides in the user's cache, once per device and model)."""
    return Encoder(cfg.dense_model, backend=cfg.embed_backend,
                   cache_dir=cache_folder(index_dir),
                   measure_dir=cache_root() if cfg.embed_backend == "auto" else None)


def _embed(docstore: DocStore, path: Path, cfg: IndexConfig, encoder: Encoder) -> dict:
    """Stream passages through ``encoder`` into a memmapped .npy file."""
    index_dir = path.parent.parent
    path.parent.mkdir(parents=True, exist_ok=True)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=cfg.dtype,
                                    shape=(docstore.size, encoder.dim))
    block = max(cfg.batch_size * 4, 256)
    batch: list[str] = []
    row = 0
    started = time.perf_counter()
    with tqdm(total=docstore.size, desc=f"dense: embedding on {encoder.device}",
              unit="passage", mininterval=1.0) as bar:
        for _, title, text in docstore.iter_texts():
            batch.append(passage_text(title, text))
            if len(batch) == block:
                out[row:row + block] = encoder.encode(batch, cfg.batch_size)
                row += block
                bar.update(block)
                batch = []
        if batch:
            out[row:row + len(batch)] = encoder.encode(batch, cfg.batch_size)
            bar.update(len(batch))
    out.flush()
    del out
    seconds = time.perf_counter() - started
    recorded = encoder.manifest()
    if Path(recorded["model_file"]).is_relative_to(index_dir):   # an export inside the index
        recorded["model_file"] = Path(recorded["model_file"]).relative_to(index_dir).as_posix()
    return {"model": cfg.dense_model, "model_path": encoder.path, "dim": encoder.dim,
            "dtype": cfg.dtype, "passages_per_second": round(docstore.size / seconds, 1),
            "encoder": recorded}


def _build_vector_index(folder: Path, cfg: IndexConfig, spann_stages=None) -> dict:
    """The vector index over ``folder``'s embeddings (``spann_stages``: where SPANN's
    clustering, replication and posting writes run, e.g. ``index.build_ray_spann.RayStages``)."""
    vectors = np.load(folder / EMBEDDINGS, mmap_mode="r")
    if cfg.faiss == "spann":
        from index.spann import build_spann  # optional heavy component

        return build_spann(vectors, folder / "dense" / "spann", stages=spann_stages)
    index = FaissIndex(build_faiss(vectors, cfg.faiss), cfg.faiss, use_gpu=False)
    index.save(folder / FAISS_FILE)
    return {"kind": "faiss", "factory": cfg.faiss, "ntotal": int(index.index.ntotal)}
