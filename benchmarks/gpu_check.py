"""GPU paths, checked side by side with the CPU on the same machine.

    python benchmarks/gpu_check.py [--passages 2000] [--batch 8]

Embeds sample passages with the bundled MiniLM on CPU and CUDA, generates with the
transformers backend (bundled SmolLM2 GGUF) on CPU and CUDA at batch 1 and batch N, and
reports whether faiss sees a GPU (FAISS indexes move there when it does). Prints a table.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import ROOT, table  # noqa: E402

PROMPT = [{"role": "system", "content": "You answer questions briefly."},
          {"role": "user", "content": "Name three rivers in Europe and one fact about each."}]


def passages(n: int) -> list[str]:
    with gzip.open(ROOT / "searchagent/sample/corpus.jsonl.gz", "rt") as handle:
        rows = [json.loads(line) for _, line in zip(range(n), handle)]
    return [f"{r['title']}\n{r['text']}" for r in rows]


def embed_rate(device: str, texts: list[str], model: str) -> float:
    from retrievers.encoder import Encoder

    encoder = Encoder(model, device=device)
    encoder.encode(texts[:64])
    start = time.perf_counter()
    encoder.encode(texts, batch_size=128)
    return len(texts) / (time.perf_counter() - start)


def generation_rate(device: str, batch: int, model: str,
                    new_tokens: int = 64) -> tuple[float, int]:
    from searchagent.generators.base import GenRequest
    from searchagent.generators.hf_transformers import TransformersGenerator

    generator = TransformersGenerator(model, device=device, batch_size=batch)
    generator.generate([GenRequest(PROMPT, max_new_tokens=4)])
    requests = [GenRequest(PROMPT, max_new_tokens=new_tokens) for _ in range(batch)]
    start = time.perf_counter()
    results = generator.generate(requests)
    tokens = sum(r.completion_tokens for r in results)
    return tokens / (time.perf_counter() - start), tokens


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--passages", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--embedder", default="default", help="sentence-transformers folder")
    parser.add_argument("--gguf", default="default", help="GGUF file for the generator")
    args = parser.parse_args()
    import torch

    cuda = torch.cuda.is_available()
    print(f"torch {torch.__version__}, CUDA available: {cuda}"
          + (f" ({torch.cuda.get_device_name(0)})" if cuda else ""))
    try:
        from index.faiss_index import gpu_count

        print(f"faiss GPUs: {gpu_count()}")
    except Exception as exc:  # faiss missing on this machine: say so, check the rest
        print(f"faiss unavailable: {exc}")
    devices = ["cpu"] + (["cuda"] if cuda else [])
    texts = passages(args.passages)
    rows = []
    for device in devices:
        rows.append(["embed (MiniLM)", device, 1, embed_rate(device, texts, args.embedder), "passages/s"])
    for device in devices:
        for batch in (1, args.batch):
            rate, tokens = generation_rate(device, batch, args.gguf)
            rows.append([f"generate (SmolLM2 GGUF via transformers, {tokens} tokens)",
                         device, batch, rate, "tokens/s"])
    print(table(["path", "device", "batch", "rate", "unit"], rows))


if __name__ == "__main__":
    main()
