"""GPU embedding the way an index build runs it: throughput and agreement with CPU fp32.

    python benchmarks/gpu_embed.py [--carry .gpu-carry] [--passages 100000]
        [--sentences 100000] [--batch-sizes 512,1024,2048] [--out bench-out]

Made for a lent GPU machine, which has torch and sentence-transformers but not this
project's models: ``benchmarks/gpu_carry.py`` writes ``--carry`` here first (the bundled
MiniLM with fp16 weights, and CPU fp32 vectors of the texts below as the reference), and
the device run carries that folder.

Texts: the sample corpus's 2,967 passages ("title\\ntext", as an index embeds them),
repeated up to --passages, and its 300 questions (short sentences), repeated up to
--sentences. Per batch size, texts/s of (a) the Encoder's CUDA path (fp16, sorted by
length, the next batch tokenized in a worker thread: ``encode_overlapped``), (b)
sentence-transformers' own ``encode`` of the same fp16 model (tokenizing in line) and (c)
tokenization alone, the ceiling of (a) once the GPU outruns the tokenizer. Agreement of
(a)'s vectors with the CPU fp32 ones: mean / min cosine, and overlap@10 of each question's
exact top 10 among those passages. Without CUDA it runs on the CPU in fp32 (a smoke
run: use small sizes). Writes gpu_embed.json into --out.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import table  # noqa: E402


def repeated(texts: list[str], n: int) -> list[str]:
    return [texts[i % len(texts)] for i in range(n)]


def timed(run, sync) -> float:
    sync()
    start = time.perf_counter()
    run()
    sync()
    return time.perf_counter() - start


def top10(queries: np.ndarray, passages: np.ndarray) -> np.ndarray:
    return np.argsort(-(queries @ passages.T), axis=1)[:, :10]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--carry", default=".gpu-carry", type=Path)
    parser.add_argument("--passages", type=int, default=100_000)
    parser.add_argument("--sentences", type=int, default=100_000)
    parser.add_argument("--batch-sizes", default="512,1024,2048")
    parser.add_argument("--out", default="bench-out", type=Path)
    args = parser.parse_args()
    import torch
    from sentence_transformers import SentenceTransformer

    from retrievers.encoder import encode_overlapped

    reference = np.load(args.carry / "reference.npz")
    texts = json.loads((args.carry / "texts.json").read_text(encoding="utf-8"))
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    model = SentenceTransformer(str(args.carry / "model"), device=device)
    if cuda:
        model.half()
    dim = reference["passages"].shape[1]
    preprocess = getattr(model, "preprocess", None) or model.tokenize
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    rows, results = [], []
    for kind, base, n in (("passages", texts["passages"], args.passages),
                          ("sentences", texts["questions"], args.sentences)):
        many = repeated(base, n)
        tokens = float(np.mean([len(ids) for ids in model.tokenizer(base)["input_ids"]]))
        for batch in (int(b) for b in args.batch_sizes.split(",")):
            encode_overlapped(model, many[:2 * batch], batch, dim)      # warm-up
            overlapped = timed(lambda: encode_overlapped(model, many, batch, dim), sync)
            inline = timed(lambda: model.encode(many, batch_size=batch, convert_to_numpy=True,
                                                normalize_embeddings=True), sync)
            order = np.argsort([-len(t) for t in many], kind="stable")
            tokenize = timed(lambda: [preprocess([many[i] for i in order[s:s + batch]])
                                      for s in range(0, n, batch)], lambda: None)
            result = {"texts": kind, "n": n, "tokens_mean": tokens, "batch": batch,
                      "overlapped_per_s": n / overlapped, "inline_per_s": n / inline,
                      "tokenize_per_s": n / tokenize}
            results.append(result)
            rows.append([kind, round(tokens, 1), batch, round(n / overlapped),
                         round(n / inline), round(n / tokenize)])
            print(rows[-1], flush=True)
    passages = encode_overlapped(model, texts["passages"], 1024, dim)
    questions = encode_overlapped(model, texts["questions"], 1024, dim)
    cosine = np.concatenate([(passages * reference["passages"]).sum(axis=1),
                             (questions * reference["questions"]).sum(axis=1)])
    mine, theirs = top10(questions, passages), top10(reference["questions"],
                                                     reference["passages"])
    overlap = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(mine, theirs)]))
    name = torch.cuda.get_device_name() if cuda else "CPU (fp32 smoke run)"
    agreement = {"cosine_mean": float(cosine.mean()), "cosine_min": float(cosine.min()),
                 "overlap_at_10": overlap}
    print(f"\n{name}, torch {torch.__version__}, {'fp16' if cuda else 'fp32'}; texts/s")
    print(table(["texts", "tokens (mean)", "batch", "Encoder (overlapped)",
                 "sentence-transformers encode", "tokenization alone"], rows))
    print(f"\nagreement with CPU fp32: cosine mean {cosine.mean():.5f}, min {cosine.min():.5f}; "
          f"overlap@10 {overlap:.3f} (300 questions over 2,967 passages)")
    if cuda:
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_embed.json").write_text(json.dumps(
        {"device": name, "torch": torch.__version__, "results": results,
         "agreement": agreement}, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
