"""Dataset loaders: one module per file shape, a registry, and shape auto-detection.

``load_dataset(name, path, fmt=None)`` reads any supported file into ``Example`` objects;
``parse_spec("NAME[:FORMAT]:PATH")`` reads the command-line form.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from eval.examples import Example
from eval.loaders import flashrag, hotpotqa, ircot, musique, nq_open, squad, triviaqa
from eval.loaders.reading import read_records, with_record_id
from searchagent.errors import InputError

# Detection order matters: earlier shapes are more specific.
FORMATS = {
    "ircot": ircot,
    "flashrag": flashrag,
    "squad": squad,
    "musique": musique,
    "hotpotqa": hotpotqa,
    "triviaqa": triviaqa,
    "nq_open": nq_open,
}
ALIASES = {"2wikimultihopqa": "hotpotqa", "2wiki": "hotpotqa", "hotpot": "hotpotqa",
           "adaptive_rag": "ircot", "nq": "nq_open", "qa": "nq_open", "tqa": "triviaqa"}


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    path: str
    fmt: str | None = None


def format_names() -> list[str]:
    return sorted(set(FORMATS) | set(ALIASES))


def resolve_format(fmt: str) -> str:
    key = fmt.strip().lower()
    key = ALIASES.get(key, key)
    if key not in FORMATS:
        raise InputError(f"unknown dataset format {fmt!r} (known: {', '.join(format_names())})",
                         field="format")
    return key


def parse_spec(spec: str) -> DatasetSpec:
    """``NAME:PATH`` or ``NAME:FORMAT:PATH`` (FORMAT overrides auto-detection)."""
    name, sep, rest = spec.partition(":")
    if not sep or not name.strip() or not rest:
        raise InputError(f"expected NAME:PATH or NAME:FORMAT:PATH, got {spec!r}",
                         field="dataset")
    head, sep2, tail = rest.partition(":")
    if sep2 and head.strip().lower() in format_names():
        return DatasetSpec(name.strip(), tail, resolve_format(head))
    if sep2 and Path(tail).is_file() and not Path(rest).exists():   # a misspelt FORMAT
        raise InputError(f"unknown format {head!r} in {spec!r} (known: "
                         f"{', '.join(format_names())})", field="dataset")
    return DatasetSpec(name.strip(), rest)


def detect_format(record: object, where: str) -> str:
    if isinstance(record, dict):
        for key, module in FORMATS.items():
            if module.matches(record):
                return key
    raise InputError("cannot tell the dataset format from the first record (pass NAME:FORMAT:"
                     f"PATH with FORMAT one of {', '.join(format_names())})", path=where)


def load_dataset(name: str, path: str | Path, fmt: str | None = None) -> list[Example]:
    """Every example in ``path``; ids must be unique within the file."""
    key = resolve_format(fmt) if fmt else None
    examples: list[Example] = []
    seen: set[str] = set()
    for loc, record in read_records(path):
        if key is None:
            key = detect_format(record, str(path))
        if not isinstance(record, dict):
            raise loc.error("expected a JSON object")
        for example in FORMATS[key].to_examples(record, with_record_id(loc, record), name):
            if example.id in seen:
                raise loc.error(f"duplicate question id {example.id!r}")
            seen.add(example.id)
            examples.append(example)
    if not examples:
        raise InputError("no questions found", path=str(path))
    return examples


def load_spec(spec: str | DatasetSpec) -> list[Example]:
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    return load_dataset(spec.name, spec.path, spec.fmt)
