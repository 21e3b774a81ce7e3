"""Pool every context paragraph of some dataset files into one corpus (the IRCoT way).

Paragraphs are de-duplicated by title + text (white space collapsed); each passage keeps
its provenance as ``sources``: ``"<dataset>/<question id>"`` for every question that
shipped it. The output lines are ``{"id", "title", "text", "sources"}``, which
``searchagent index build`` reads directly.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Iterable, Mapping

from tqdm.auto import tqdm

from eval.loaders import DatasetSpec, load_dataset, parse_spec
from searchagent.errors import InputError
from searchagent.files import write_atomically


def passage_key(title: str, text: str) -> tuple[str, str]:
    return " ".join(title.split()), " ".join(text.split())


def passage_id(title: str, text: str) -> str:
    """A stable id: the same paragraph gets the same id in every pooled corpus."""
    key = "\n".join(passage_key(title, text)).encode("utf-8")
    return hashlib.sha1(key).hexdigest()[:16]


def _specs(paths_by_dataset) -> list[DatasetSpec]:
    if isinstance(paths_by_dataset, Mapping):
        specs = []
        for name, paths in paths_by_dataset.items():
            for path in [paths] if isinstance(paths, (str, Path)) else paths:
                specs.append(DatasetSpec(name, str(path)))
        return specs
    return [s if isinstance(s, DatasetSpec) else parse_spec(s) for s in paths_by_dataset]


def pool_corpus(paths_by_dataset: Mapping[str, str | Path | Iterable[str | Path]]
                | Iterable[str | DatasetSpec], out_path: str | Path) -> dict:
    """Write the pooled corpus atomically; return counts per dataset and in total.

    ``paths_by_dataset`` maps a dataset name to one path or a list of paths, or is a list
    of ``NAME[:FORMAT]:PATH`` specs.
    """
    specs = _specs(paths_by_dataset)
    for spec in specs:   # writing the pool over a benchmark file would destroy it
        if Path(spec.path).resolve() == Path(out_path).resolve():
            raise InputError(f"--out is the dataset file of {spec.name!r}; write the pooled "
                             "corpus elsewhere", path=str(out_path), field="out")
    passages: dict[tuple[str, str], dict] = {}
    stats: dict = {"datasets": {}, "paragraphs": 0}
    for spec in specs:
        examples = load_dataset(spec.name, spec.path, spec.fmt)
        seen = 0
        for example in tqdm(examples, desc=f"pool {spec.name}", unit="q", mininterval=1.0):
            for para in example.paragraphs:
                key = passage_key(para.title, para.text)
                if not key[1]:
                    continue
                seen += 1
                entry = passages.get(key)
                if entry is None:
                    entry = passages[key] = {"id": passage_id(*key), "title": para.title.strip(),
                                             "text": para.text.strip(), "sources": []}
                source = f"{spec.name}/{example.id}"
                if source not in entry["sources"]:
                    entry["sources"].append(source)
        stats["datasets"][f"{spec.name}:{spec.path}"] = {"questions": len(examples),
                                                         "paragraphs": seen}
        stats["paragraphs"] += seen
    if not passages:
        raise InputError("no context paragraphs in the given files: nothing to pool "
                         "(question-only files need a corpus from elsewhere)")
    _write_jsonl_atomic(Path(out_path), passages.values())
    stats["passages"] = len(passages)
    return stats


def _write_jsonl_atomic(path: Path, rows: Iterable[dict]) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")

    write_atomically(path, write)
