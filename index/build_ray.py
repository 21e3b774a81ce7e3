"""The distributed build on Ray Data, ``build_index(..., engine="ray")``: the same index folder
as the local build (``index.build``).

1. Read tasks stream the corpus as (line number, line) blocks (a plain file in byte ranges of
   whole lines, a gzipped one in one task); ``map_batches`` tasks parse
   them (``index.corpus.parse_record``), chunk them and count BM25 terms; bad lines travel as
   data. In corpus order (``preserve_order``) the driver raises the first error as the local
   reader would, numbers the rows, writes the doc store (duplicate ids found as the local
   ``load_corpus`` finds them) and maps block term ids to global ones in first-seen order,
   streaming the counts into run files; the merge pass writes the local index
   (``retrievers.bm25_build.BM25Writer``, ``index.build_ray_read``).
2. ``map_batches`` over a fixed actor pool embeds (one ``Encoder`` per actor; one actor per GPU,
   or CPU actors sharing the cores); the driver writes results at their rows of the memmap
   (``index.build_ray_embed``).
3. The vector index and manifest as locally (plus ``engine`` and Ray's version), all inside
   ``atomic_folder``; for SPANN, the root's nearest-centroid search and the clustering of its
   subtrees, boundary replication (each vector's nearest heads and the RNG rule) over row
   ranges and the posting writes over head ranges run as Ray tasks
   (``index.build_ray_spann``). Dead tasks are
   retried and dead actors restarted (``RETRIES``, in ``index.build_ray_session`` with the
   Ray session itself).

Left to do: the corpus is read on the driver's node (a gzipped one by one task), so the
driver must join the cluster (``auto`` or HOST:PORT, not ``ray://``); every node needs the
model; the BM25 merge pass runs on the driver.
"""

from __future__ import annotations

from contextlib import closing, nullcontext
from pathlib import Path

from index.build import EMBEDDINGS, _build_vector_index, finish_build
from index.faiss_index import check_trainable
from index.manifest import atomic_folder
from retrievers.bm25_build import BM25Writer
from retrievers.docstore import pop_duplicate_source, write_docstore
from searchagent.config import Config
from searchagent.errors import InputError

try:        # everything the stages below import from Ray Data, so a missing piece is named
    import pyarrow  # noqa: F401
    import pyarrow.compute  # noqa: F401
    import ray
    import ray.data.block  # noqa: F401
    import ray.data.datasource  # noqa: F401
    import ray.util.scheduling_strategies  # noqa: F401
except ImportError as exc:       # the optional extra is missing
    raise InputError(f"--engine ray needs Ray Data ({exc.name} is not installed): "
                     "pip install 'searchagent[ray]'", field="engine") from exc

from index.build_ray_embed import embed  # noqa: E402 -- needs the imports checked above
from index.build_ray_read import Collected, parsed_blocks  # noqa: E402
from index.build_ray_session import ray_session, timed  # noqa: E402
from index.build_ray_spann import RayStages  # noqa: E402


def build_index_ray(corpus: str | Path, out: str | Path, config: Config, overwrite: bool = False,
                    address: str | None = None, num_gpus: int = 0,
                    num_cpus: int | None = None) -> dict:
    """``index.build.build_index`` on Ray (it validated ``config``); return the manifest."""
    cfg, corpus, timings, components, pool = config.index, Path(corpus), {}, {}, {}
    if cfg.chunk_overlap < 0 or (cfg.chunk_words and cfg.chunk_overlap >= cfg.chunk_words):
        raise InputError("chunk overlap must be >= 0 and smaller than chunk words",
                         field="chunk_overlap")
    if num_gpus < 0 or (num_cpus is not None and num_cpus < 1):
        raise InputError("--num-gpus must be >= 0 and --num-cpus >= 1", field="engine")
    with atomic_folder(out, overwrite=overwrite) as tmp:
        # run files inside tmp, closed when the build ends either way
        bm25 = BM25Writer(tmp / "bm25") if cfg.bm25 else None
        with ray_session(address, num_cpus, num_gpus, timings), \
                (closing(bm25) if bm25 else nullcontext()):
            block = max(cfg.batch_size * 4, 256)       # the local build's encode block
            collected = Collected(block if cfg.dense else 0, bm25)
            with timed(timings, "docstore"):        # duplicates found as in load_corpus
                batches = parsed_blocks(corpus, cfg.chunk_words, cfg.chunk_overlap, cfg.bm25)
                sources = tmp / "docs.duckdb.sources"
                count = write_docstore(tmp / "docs.duckdb",
                                       collected.passages(batches, str(corpus)), sources=sources)
                if not count:
                    raise InputError("empty corpus: no passages found", path=str(corpus))
                duplicate = pop_duplicate_source(sources)
                if duplicate is not None:
                    raise InputError(f"duplicate id {duplicate[0]!r} (first on line "
                                     f"{duplicate[1]})", path=str(corpus), line=duplicate[2],
                                     field="id")
                if cfg.dense and cfg.faiss != "spann":     # before anything is embedded
                    check_trainable(cfg.faiss, count)
            if bm25 is not None:
                with timed(timings, "bm25"):            # the merge pass: writes the files
                    components["bm25"] = bm25.finish(cfg.bm25_k1, cfg.bm25_b)
            if cfg.dense:
                with timed(timings, "embed"):
                    components["dense"], pool = embed(collected.refs, count, tmp, cfg, block,
                                                      num_gpus)
                with timed(timings, "vector_index"):     # SPANN's stages in Ray tasks
                    components["dense"]["index"] = _build_vector_index(
                        tmp, cfg, RayStages(tmp / EMBEDDINGS))
        manifest = finish_build(tmp, config, corpus, count, components, timings,
                                engine="ray", ray={"version": ray.__version__,
                                                   "address": address or "local", **pool})
    return manifest

