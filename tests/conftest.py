"""Shared fixtures: a small real index (real embedder, real DuckDB) built once per run."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SAMPLE = Path(__file__).resolve().parents[1] / "searchagent" / "sample"
SMALL_CORPUS_SIZE = 400


def sample_passages(limit: int = SMALL_CORPUS_SIZE) -> list[dict]:
    rows = []
    with gzip.open(SAMPLE / "corpus.jsonl.gz", "rt", encoding="utf-8") as handle:
        for line in handle:
            rows.append(json.loads(line))
            if len(rows) == limit:
                break
    return rows


def sample_questions() -> list[dict]:
    return [json.loads(line) for line in open(SAMPLE / "questions.jsonl", encoding="utf-8")]


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in sample_passages()))
    return path


@pytest.fixture(scope="session")
def small_index(small_corpus, tmp_path_factory) -> Path:
    """BM25 + dense (Flat) index over the first 400 sample passages."""
    from index.build import build_index

    out = tmp_path_factory.mktemp("index") / "small"
    build_index(small_corpus, out)
    return out


@pytest.fixture(scope="session")
def searcher(small_index):
    from retrievers.searcher import Searcher

    searcher = Searcher(small_index)
    yield searcher
    searcher.close()
