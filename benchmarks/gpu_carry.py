"""Prepare the folder a lent GPU machine needs for ``benchmarks/gpu_embed.py``.

    .venv/bin/python benchmarks/gpu_carry.py [--out .gpu-carry]

The device image has torch and sentence-transformers but cannot fetch anything, and one
call carries at most 64 MiB with the working tree. This writes (git-ignored, about 50 MB):
``model/``, the bundled all-MiniLM-L6-v2 folder with its weights stored in fp16 (the CUDA
path runs the model in fp16 anyway), ``texts.json`` (the sample corpus's 2,967 passages as
an index shows them and its 300 questions) and ``reference.npz``: their vectors from this
machine's CPU in fp32, from the original weights, the vectors the GPU run is compared
with. Then, in one device call:

    run(command="nvidia-smi -L; PYTHONUNBUFFERED=1 python3 benchmarks/gpu_embed.py
        --out $OUT", carry=[".gpu-carry"], timeout_s=540)
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import ROOT  # noqa: E402

SAMPLE = ROOT / "searchagent" / "sample"
WEIGHTS = "model.safetensors"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=ROOT / ".gpu-carry", type=Path)
    args = parser.parse_args()
    import numpy as np
    import torch
    from safetensors.torch import load_file, save_file

    from retrievers.encoder import Encoder, passage_text
    from searchagent.models import embedder_path

    source = Path(embedder_path())
    model = args.out / "model"
    shutil.rmtree(model, ignore_errors=True)
    shutil.copytree(source, model, ignore=shutil.ignore_patterns(WEIGHTS, "README.md"))
    weights = load_file(source / WEIGHTS)
    save_file({k: v.to(torch.float16) if v.is_floating_point() else v
               for k, v in weights.items()}, model / WEIGHTS, metadata={"format": "pt"})
    with gzip.open(SAMPLE / "corpus.jsonl.gz", "rt", encoding="utf-8") as handle:
        passages = [passage_text(row["title"], row["text"]) for row in map(json.loads, handle)]
    questions = [json.loads(line)["question"]
                 for line in open(SAMPLE / "questions.jsonl", encoding="utf-8")]
    (args.out / "texts.json").write_text(json.dumps({"passages": passages,
                                                     "questions": questions}), encoding="utf-8")
    encoder = Encoder(device="cpu")
    np.savez(args.out / "reference.npz", passages=encoder.encode(passages, 64, progress=True),
             questions=encoder.encode(questions, 64))
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"wrote {args.out} ({size / 2**20:.1f} MiB): {len(passages)} passages, "
          f"{len(questions)} questions, fp16 weights")


if __name__ == "__main__":
    main()
