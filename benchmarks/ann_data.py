"""Benchmark vectors for ``benchmarks/ann.py``: a clustered synthetic mixture and MiniLM
embeddings of the pooled QA corpora. Everything is cached as ``.npy`` under ``--cache``.

Synthetic mixture: ``n / 1000`` clusters with Zipf-like (uneven) sizes; each cluster is a
random unit centre plus a random 16-dimensional subspace with its own spread, plus
isotropic noise; rows are L2-normalized. Queries are fresh draws from the same mixture.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

LATENT = 16
CHUNK = 100_000


class Mixture:
    """A fixed random mixture; ``draw`` samples rows from it reproducibly."""

    def __init__(self, clusters: int, dim: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.dim = dim
        centres = rng.standard_normal((clusters, dim)).astype(np.float32)
        self.centres = centres / np.linalg.norm(centres, axis=1, keepdims=True)
        bases = rng.standard_normal((clusters, LATENT, dim)) / np.sqrt(dim)
        self.bases = bases.astype(np.float32)
        self.spread = rng.uniform(0.3, 0.8, clusters).astype(np.float32)
        weights = 1.0 / np.arange(1, clusters + 1) ** 0.9
        self.weights = rng.permutation(weights / weights.sum())
        self.noise = 0.25 / np.sqrt(dim)

    def draw(self, n: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        which = np.sort(rng.choice(len(self.weights), size=n, p=self.weights))
        latent = rng.standard_normal((n, LATENT)).astype(np.float32) * self.spread[which, None]
        rows = rng.standard_normal((n, self.dim)).astype(np.float32) * self.noise
        bounds = np.searchsorted(which, np.arange(len(self.weights) + 1))
        for c in np.flatnonzero(np.diff(bounds)):
            lo, hi = bounds[c], bounds[c + 1]
            rows[lo:hi] += self.centres[c] + latent[lo:hi] @ self.bases[c]
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        return rng.permutation(rows).astype(np.float32)


def synthetic(cache: Path, n: int, dim: int = 384, queries: int = 1000,
              seed: int = 0) -> tuple[Path, np.ndarray]:
    """(path of the cached (n, dim) float32 base .npy, query array)."""
    cache.mkdir(parents=True, exist_ok=True)
    base_path = cache / f"synthetic-{n}-{dim}.npy"
    mixture = Mixture(max(10, n // 1000), dim, seed)
    if not base_path.exists():
        tmp = base_path.with_suffix(".tmp.npy")
        np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, dim)).flush()
        starts = list(range(0, n, CHUNK))
        jobs = [(tmp, mixture, start, min(n, start + CHUNK), seed + 1 + start // CHUNK)
                for start in starts]
        workers = min(len(jobs), max(1, (os.cpu_count() or 1) // 2))
        with ProcessPoolExecutor(workers) as pool:
            list(tqdm(pool.map(_fill, jobs), total=len(jobs), desc=f"synthetic {n}x{dim}",
                      unit="chunk"))
        tmp.rename(base_path)
    return base_path, mixture.draw(queries, seed + 10_000_000)


def _fill(job) -> None:
    path, mixture, start, stop, seed = job
    out = np.load(path, mmap_mode="r+")
    out[start:stop] = mixture.draw(stop - start, seed)
    out.flush()


SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(])")


def pooled_texts(data: Path) -> tuple[list[str], list[str]]:
    """(passages, their sentences and sentence pairs; questions) from the multi-hop files."""
    paragraphs: dict[str, str] = {}
    questions: list[str] = []

    def add(title: str, text) -> None:
        text = " ".join(text) if isinstance(text, list) else str(text)
        paragraphs.setdefault(f"{title}\n{text}", text)

    for path in [data / "hotpotqa/xindili-cmu__anlp-project-multihop/dev_subsampled.jsonl"]:
        for line in open(path, encoding="utf-8"):
            row = json.loads(line)
            questions.append(row["question_text"])
            for ctx in row["contexts"]:
                add(ctx["title"], ctx["paragraph_text"])
    for name in ("dev.jsonl", "train.jsonl"):
        for line in open(data / "hotpotqa/megagonlabs__RPT" / name, encoding="utf-8"):
            row = json.loads(line)
            questions.append(row.get("question", ""))
            ctx = row["context"]
            for title, sentences in zip(ctx["title"], ctx["sentences"]):
                add(title, sentences)
    for line in open(data / "musique/AdelWang__MIGRES/musique.json", encoding="utf-8"):
        row = json.loads(line)
        questions.append(row["question"])
        for para in row["paragraphs"]:
            add(para["title"], para["paragraph_text"])
    for line in open(data / "2wikimultihopqa/ninehills__deepsearch-rl/"
                     "2wikimultihopqa_dev_200.jsonl", encoding="utf-8"):
        row = json.loads(line)
        questions.append(row["question"])
        ctx = row["metadata"]["context"]
        for title, sentences in zip(ctx["title"], ctx["content"]):
            add(title, sentences)
    for line in open(data / "musique/ninehills__deepsearch-rl/musique_dev_200.jsonl",
                     encoding="utf-8"):
        row = json.loads(line)
        questions.append(row["question"])
        for step in row["metadata"]["question_decomposition"]:
            para = step["support_paragraph"]
            add(para["title"], para["paragraph_text"])
    for line in open(data / "2wikimultihopqa/Trustworthy-Information-Access__"
                     "Annotation-Efficient-Universal-Honesty-Alignment/dev.jsonl",
                     encoding="utf-8"):
        questions.append(json.loads(line)["question"])
    texts = list(paragraphs)
    for text in paragraphs.values():  # sentences, then adjacent sentence pairs
        parts = [s for s in SENTENCE.split(text) if len(s.split()) >= 3]
        if len(parts) > 1:
            texts.extend(parts)
            texts.extend(f"{a} {b}" for a, b in zip(parts, parts[1:]) if len(parts) > 2)
    return texts, [q for q in dict.fromkeys(questions) if q]


def real(cache: Path, data: Path, queries: int = 1000, block: int = 4096,
         seed: int = 0) -> tuple[Path, np.ndarray]:
    """(path of cached MiniLM embeddings of the pooled texts, embedded questions).

    Embedding resumes where a killed run stopped (``done`` rows are tracked beside it).
    """
    from retrievers.encoder import Encoder

    cache.mkdir(parents=True, exist_ok=True)
    base_path, query_path = cache / "real-minilm.npy", cache / "real-minilm-queries.npy"
    if base_path.exists() and query_path.exists():
        return base_path, np.load(query_path)
    texts_path = cache / "real-texts.json.gz"
    if not texts_path.exists():  # the texts travel to machines without ../shared/data
        texts, questions = pooled_texts(data)
        with gzip.open(texts_path, "wt", encoding="utf-8") as handle:
            json.dump({"texts": texts, "questions": questions}, handle)
    with gzip.open(texts_path, "rt", encoding="utf-8") as handle:
        pooled = json.load(handle)
    texts, questions = pooled["texts"], pooled["questions"]
    encoder = Encoder(os.environ.get("ANN_EMBEDDER", "default"),   # backends: docs/embedding.md
                      backend=os.environ.get("ANN_EMBED_BACKEND", "torch"))
    tmp, progress = cache / "real-minilm.tmp.npy", cache / "real-minilm.progress.json"
    done = json.loads(progress.read_text())["done"] if progress.exists() and tmp.exists() else 0
    out = np.lib.format.open_memmap(tmp, mode="r+" if done else "w+", dtype=np.float32,
                                    shape=(len(texts), encoder.dim))
    with tqdm(total=len(texts), initial=done, desc="real: embedding texts", unit="text") as bar:
        for start in range(done, len(texts), block):
            out[start:start + block] = encoder.encode(texts[start:start + block])
            out.flush()
            progress.write_text(json.dumps({"done": min(len(texts), start + block)}))
            bar.update(min(block, len(texts) - start))
    del out
    rng = np.random.default_rng(seed)
    picked = [questions[i] for i in rng.choice(len(questions), queries, replace=False)]
    np.save(query_path, encoder.encode(picked))
    tmp.rename(base_path)
    progress.unlink()
    return base_path, np.load(query_path)
