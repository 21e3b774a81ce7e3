"""``searchagent index build|info`` (and, from ``index_update_cmd``, add|delete|compact|recover)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from searchagent.config import IndexConfig, load_config


def register(sub) -> None:
    index = sub.add_parser("index", help="build or inspect an index folder")
    actions = index.add_subparsers(dest="action", required=True)

    build = actions.add_parser("build", help="corpus JSONL(.gz) -> index folder")
    build.add_argument("corpus", help="JSONL with {id,title,text} or {id,contents} per line")
    build.add_argument("--out", required=True, help="index folder to create")
    build.add_argument("--bm25", action="store_true", help="build BM25 (default: both)")
    build.add_argument("--dense", nargs="?", const="default", metavar="MODEL",
                       help="build dense embeddings with MODEL (default: bundled MiniLM)")
    build.add_argument("--faiss", metavar="FACTORY", help="faiss index_factory string "
                       "(Flat, HNSW32, IVF256,Flat, ...)")
    build.add_argument("--index", choices=["faiss", "spann"], default=None,
                       help="vector index kind (spann = SSD-backed disk index)")
    build.add_argument("--dtype", choices=["float16", "float32"],
                       help="stored embeddings (index.dtype, default float16)")
    build.add_argument("--chunk-words", type=int, help="split passages into N-word windows")
    build.add_argument("--chunk-overlap", type=int, help="words shared by adjacent windows")
    build.add_argument("--batch-size", type=int, help="texts per embedding batch "
                       "(index.batch_size, default 64)")
    build.add_argument("--embed-backend", choices=["torch", "onnx", "onnx-int8", "openvino",
                                                   "openvino-int8", "auto"],
                       help="runtime of the embedder (default torch; auto: the fastest that "
                       "keeps cosine >= 0.999 to torch here); queries use the same one")
    build.add_argument("--overwrite", action="store_true", help="replace an existing index")
    build.add_argument("--engine", choices=["local", "ray"], default="local",
                       help="ray: a distributed build on Ray Data (pip install "
                       "'searchagent[ray]'); the same index folder")
    build.add_argument("--ray-address", metavar="ADDR", help="join this Ray cluster ('auto' or "
                       "HOST:PORT; default: start Ray on this machine)")
    build.add_argument("--num-gpus", type=int,
                       help="ray: embedding actors, one per GPU (default 0: CPU actors)")
    build.add_argument("--num-cpus", type=int, help="ray: cores of the Ray started here "
                       "(default: all)")
    build.set_defaults(func=run_build)

    info = actions.add_parser("info", help="print an index's manifest summary")
    info.add_argument("index_dir", help="an index folder")
    info.add_argument("--verify", choices=["size", "full"], default="full",
                      help="check file sizes only, or sizes and sha256 (default)")
    info.add_argument("--json", action="store_true", help="print the manifest as JSON")
    info.set_defaults(func=run_info)

    from searchagent.cli.index_update_cmd import register_updates

    register_updates(actions)


def run_build(args) -> int:
    from index.build import build_index

    chosen = args.bm25 or args.dense is not None    # else index.bm25 / index.dense decide
    cli = {"index": {
        "bm25": args.bm25 if chosen else None,
        "dense": args.dense is not None if chosen else None,
        "dense_model": args.dense,
        "faiss": "spann" if args.index == "spann" else args.faiss,
        "dtype": args.dtype, "chunk_words": args.chunk_words,
        "chunk_overlap": args.chunk_overlap, "batch_size": args.batch_size,
        "embed_backend": args.embed_backend}}
    config = load_config(args.config, cli=cli)
    if args.index == "faiss" and config.index.faiss == "spann":   # the flag beats the file
        config = config.updated({"index": {"faiss": IndexConfig().faiss}}, "command line")
    refuse_ignored_flags(args, config.index)
    manifest = build_index(args.corpus, args.out, config, overwrite=args.overwrite,
                           engine=args.engine, ray_address=args.ray_address,
                           num_gpus=args.num_gpus or 0, num_cpus=args.num_cpus)
    print(f"built {args.out}: {manifest['counts']['passages']} passages, components: "
          f"{', '.join(manifest['components'])}; seconds per stage: {manifest['build_seconds']}")
    return 0


def refuse_ignored_flags(args, cfg) -> None:
    """A flag this build would not use is an error, not a silent no-op."""
    from searchagent.errors import InputError

    if args.engine != "ray":
        given = [flag for flag, value in (("--ray-address", args.ray_address),
                                          ("--num-gpus", args.num_gpus),
                                          ("--num-cpus", args.num_cpus)) if value is not None]
        if given:
            raise InputError(f"{given[0]} applies to a Ray build only (add --engine ray)")
    if not cfg.dense:
        given = [flag for flag, value in (("--faiss", args.faiss), ("--index", args.index),
                                          ("--dtype", args.dtype),
                                          ("--batch-size", args.batch_size),
                                          ("--embed-backend", args.embed_backend),
                                          ("--num-gpus", args.num_gpus))   # embedding only
                 if value is not None]
        if given:
            raise InputError(f"{given[0]} applies to the dense index, which this build skips "
                             "(--bm25 alone builds BM25 only; add --dense to build both)")
    if args.index == "spann" and args.faiss is not None:
        raise InputError(f"--faiss {args.faiss} applies to a FAISS vector index, which "
                         "--index spann replaces (drop one of them)")
    if args.chunk_overlap and not cfg.chunk_words:
        raise InputError(f"--chunk-overlap {args.chunk_overlap} needs --chunk-words N "
                         "(without it passages are kept whole)")


def run_info(args) -> int:
    from index.journal import JOURNAL
    from index.manifest import built_index_config, verify_whole_index

    manifest = verify_whole_index(args.index_dir, args.verify)
    if (Path(args.index_dir) / JOURNAL).exists():
        print(f"searchagent: an update of {args.index_dir} died before it committed; the "
              f"next update rolls it back, or run: searchagent index recover {args.index_dir}",
              file=sys.stderr)
    if args.json:
        print(json.dumps(manifest, indent=2))
        return 0
    print(f"index:      {args.index_dir} (format {manifest['format_version']}, "
          f"built {manifest['built_at']}, searchagent {manifest['searchagent_version']})")
    print(f"corpus:     {manifest['corpus']['path']} sha256 {manifest['corpus']['sha256'][:16]}…")
    print(f"passages:   {manifest['counts']['passages']}")
    built = built_index_config(args.index_dir)
    if built.get("chunk_words"):
        print(f"windows:    {built['chunk_words']} words, overlap {built.get('chunk_overlap', 0)}"
              " (ids ID#0, ID#1, ...; searches keep retrieval.windows_per_doc of a document)")
    for name, component in manifest["components"].items():
        print(f"{name + ':':<11} {json.dumps(component)}")
    counts = manifest["counts"]
    if manifest.get("generation"):
        print(f"generation: {manifest['generation']} (updated {manifest['updated_at']}); "
              f"rows {counts['rows']}, live {counts['passages']}, deleted {counts['deleted']}")
        print(f"segments:   {', '.join(_segments(manifest))}")
        for step in manifest.get("history", [])[-5:]:
            print(f"            gen {step['generation']}: {step['op']} +{step['added']} "
                  f"-{step['deleted']} in {step['seconds']} s ({step['at']})")
    folder = Path(args.index_dir)      # a growing file (SPANN's postings) has a min_size
    sizes = [f["size"] if "size" in f else (folder / rel).stat().st_size
             for rel, f in manifest["files"].items()]
    print(f"files:      {len(manifest['files'])} ({sum(sizes) / 1e6:.1f} MB), "
          f"{args.verify} check ok")
    print(f"build (s):  {manifest['build_seconds']}")
    return 0


def _segments(manifest: dict) -> list[str]:
    """What a living index is made of now, one phrase per component."""
    parts, components, files = [], manifest["components"], manifest["files"]
    if "bm25" in components:
        bm25 = components["bm25"]
        parts.append(f"bm25 base {bm25.get('base') or 'build'} + {len(bm25.get('segments', []))} "
                     f"segment(s), {bm25.get('n_live', '?')} live of {bm25.get('n_rows', '?')} rows")
    if "dense" in components:
        dense = components["dense"]
        added = sum(s["count"] for s in dense.get("segments", []))
        parts.append(f"dense {len(dense.get('segments', []))} appended segment(s) "
                     f"({added} rows), {dense.get('deleted', {}).get('count', 0)} deleted")
        index = dense["index"]
        if index.get("kind") == "spann" and "n_live_heads" in index:
            postings = index["postings"]
            size = files.get(f"dense/spann/{postings['file']}", {}).get("min_size", 0)
            parts.append(f"spann {index['n_live_heads']} live heads ({index['n_dead_heads']} "
                         f"dead), {index['n_valid_entries']} of {index['n_entries']} entries "
                         f"valid, {postings['file']} {size / 1e6:.1f} MB")
    return parts
