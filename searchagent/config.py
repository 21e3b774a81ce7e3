"""One typed configuration: defaults < config file (TOML/JSON) < environment < CLI flags.

Environment overrides use ``SEARCHAGENT__SECTION__KEY=value`` (values parsed as JSON when
possible, otherwise taken as strings). The resolved config is written into every index
and run folder as ``config.json``; secret fields (``metadata={"secret": True}``: the API
keys) are never written, only marked ``SECRET_MARK`` when set (``Config.public_dict``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from searchagent.errors import InputError

ENV_PREFIX = "SEARCHAGENT__"
SECRET_MARK = "***set***"             # what a written config shows for a secret that is set


def bounded(default: Any, low: float | None = None, high: float | None = None,
            above: float | None = None) -> Any:
    """A number field that must be >= ``low``, <= ``high`` and > ``above`` (where given)."""
    return field(default=default, metadata={"low": low, "high": high, "above": above})


def choice(default: str, *options: str) -> Any:
    """A text field that must be one of ``options`` (``default`` is the first)."""
    return field(default=default, metadata={"choices": (default, *options)})


def secret(default: str = "") -> Any:
    """A config field that is never written to disk (``Config.public_dict``) nor shown in
    a repr."""
    return field(default=default, repr=False, metadata={"secret": True})


@dataclass
class IndexConfig:
    bm25: bool = True
    dense: bool = True
    dense_model: str = "default"          # "default" = the bundled all-MiniLM-L6-v2
    embed_backend: str = choice("torch", "onnx", "onnx-int8", "openvino", "openvino-int8",
                                "auto")
    faiss: str = "Flat"                   # a faiss index_factory string, or "spann"
    dtype: str = choice("float16", "float32")    # stored embeddings
    chunk_words: int = bounded(0, 0)      # 0 = keep passages whole
    chunk_overlap: int = bounded(0, 0)
    batch_size: int = bounded(64, 1)
    bm25_k1: float = bounded(1.5, 0.0)
    bm25_b: float = bounded(0.75, 0.0, 1.0)
    verify: str = choice("full", "size")  # checksum check on open


@dataclass
class RetrievalConfig:
    mode: str = choice("hybrid", "bm25", "dense")
    k: int = bounded(5, 1)
    rrf_k: int = bounded(60, 0)
    hnsw_ef_search: int = bounded(64, 1)
    ivf_nprobe: int = bounded(16, 1)
    funnel_coarse_k: int = bounded(100, 1)  # multi-hop funnel: candidates per coarse retriever
    funnel_shortlist: int = bounded(20, 1)  # kept after exact dense re-scoring
    reranker: str = ""                    # optional local cross-encoder folder (none bundled)
    windows_per_doc: int = bounded(1, 0)  # chunked index: most windows of one document (0: all)


@dataclass
class GeneratorConfig:
    backend: str = choice("llama_cpp", "transformers", "openai")
    model: str = "default"                # "default" = the bundled SmolLM2-135M-Instruct GGUF
    threads: int = bounded(0, 0)          # 0 = all cores
    max_new_tokens: int = bounded(48, 1)
    temperature: float = bounded(0.0, 0.0)
    context_tokens: int = bounded(2048, 1)
    base_url: str = ""
    api_key: str = secret()
    timeout_s: float = bounded(60.0, above=0.0)
    retries: int = bounded(2, 0, 10)       # a failed call is tried 1 + retries times


@dataclass
class AgentConfig:
    strategy: str = choice("auto", "parametric", "single", "multi")
    max_hops: int = bounded(4, 1, 8)     # as a REST request may ask (steps must fit the prompt)
    context_budget_tokens: int = bounded(1200, 1)
    hop_query: str = choice("bridge", "question", "step", "question+step")  # multi-hop query
    fewshot: int = bounded(1, 0)          # demos in the multi-hop reasoning prompt (train data)
    # lambda where no trained policy has one: feedback without a policy, the demo's training
    # (a trained policy serves at its own lambda unless a request gives one)
    lam: float = bounded(0.1, 0.0)
    policy_dir: str = ""


@dataclass
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = bounded(8000, 0, 65535)
    max_queue: int = bounded(64, 0)
    request_timeout_s: float = bounded(120.0, above=0.0)
    # service time assumed before one is measured (0: the deadline)
    expected_service_s: float = bounded(0.0, 0.0)
    max_body_bytes: int = bounded(65536, 1)
    api_key: str = secret()
    scheduler: str = choice("priority", "fcfs")
    non_stall: bool = True                # cut retrievals past the budget when generation idles
    sessions: int = bounded(8, 1)         # agent sessions running at once
    max_batch: int = bounded(8, 1)        # generation calls per backend call (batching backends)
    retrieval_budget_ms: float = bounded(50.0, 0.0)
    retrieval_workers: int = bounded(2, 1)
    allow_updates: bool = False           # POST/DELETE /v1/documents change the index
    # with updates on: compact after this many updates since the last compaction (0: never;
    # the manifest's history reaches back 100)
    compact_every: int = bounded(50, 0, 100)


@dataclass
class Config:
    index: IndexConfig = field(default_factory=IndexConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    agent: AgentConfig = field(default_factory=AgentConfig)
    server: ServerConfig = field(default_factory=ServerConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def public_dict(self) -> dict[str, Any]:
        """``to_dict`` with every set secret replaced by ``SECRET_MARK``: what may be
        written to disk or shown."""
        data = self.to_dict()
        for section, name in secret_fields():
            if data[section][name]:
                data[section][name] = SECRET_MARK
        return data

    def write(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.public_dict(), indent=2, sort_keys=True) + "\n")

    def updated(self, overrides: Mapping[str, Mapping[str, Any]], source: str,
                text: bool = False) -> "Config":
        """Return a copy with ``{section: {key: value}}`` applied, type-checked per field;
        with ``text`` (environment variables) values are strings read as JSON first."""
        data = self.to_dict()
        limits = {section.name: {f.name: f.metadata for f in
                                 dataclasses.fields(section.default_factory)}
                  for section in dataclasses.fields(Config)}
        if not isinstance(overrides, Mapping):
            raise InputError("expected a table of [sections]", path=source)
        for section, values in overrides.items():
            if section not in data:
                raise InputError(f"unknown config section (known: {', '.join(data)})",
                                 path=source, field=section)
            if not isinstance(values, Mapping):
                raise InputError("expected a table of settings", path=source, field=section)
            for key, value in values.items():
                if key not in data[section]:
                    raise InputError(f"unknown config key in [{section}]",
                                     path=source, field=f"{section}.{key}")
                if value == SECRET_MARK and (section, key) in secret_fields():
                    raise InputError(f"{SECRET_MARK!r} only marks a secret that was set, it "
                                     "is not the key; give the key through the environment "
                                     "or a key file", path=source, field=f"{section}.{key}")
                name = f"{section}.{key}"
                value = _coerce(value, type(data[section][key]), source, name, text)
                _check_limits(value, limits[section][key], source, name)
                data[section][key] = value
        return Config.from_dict(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping[str, Any]]) -> "Config":
        kinds = {f.name: f.default_factory for f in dataclasses.fields(cls)}
        return cls(**{name: kinds[name](**data.get(name, {})) for name in kinds})


def secret_fields() -> list[tuple[str, str]]:
    """(section, key) of every secret field."""
    return [(section.name, f.name) for section in dataclasses.fields(Config)
            for f in dataclasses.fields(section.default_factory)
            if f.metadata.get("secret")]


def _coerce(value: Any, kind: type, source: str, name: str, text: bool = False) -> Any:
    if text and isinstance(value, str) and kind is not str:
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            pass
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            value = float(value)
        except OverflowError:
            raise InputError(f"must be a finite number, got an integer of {len(str(value))} "
                             "digits", path=source, field=name) from None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InputError(f"expected {kind.__name__}, got {value!r}", path=source, field=name)
    if kind is float and not math.isfinite(value):
        raise InputError(f"must be a finite number, got {value!r}", path=source, field=name)
    return value


def _check_limits(value: Any, limits: Mapping[str, Any], source: str, name: str) -> None:
    if limits.get("choices") and value not in limits["choices"]:
        raise InputError(f"must be one of {', '.join(limits['choices'])}, got {value!r}",
                         path=source, field=name)
    low, high, above = limits.get("low"), limits.get("high"), limits.get("above")
    rule = (f">= {low:g}" if low is not None and value < low else
            f"<= {high:g}" if high is not None and value > high else
            f"> {above:g}" if above is not None and value <= above else None)
    if rule:
        raise InputError(f"must be {rule}, got {value!r}", path=source, field=name)


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None,
                cli: Mapping[str, Mapping[str, Any]] | None = None) -> Config:
    """Resolve the configuration from its layers."""
    config = Config()
    if path:
        config = config.updated(_read_file(Path(path)), str(path))
    env = os.environ if env is None else env
    from_env: dict[str, dict[str, Any]] = {}
    for key, value in env.items():
        if key.startswith(ENV_PREFIX):
            parts = key[len(ENV_PREFIX):].lower().split("__")
            if len(parts) != 2:
                raise InputError("expected SEARCHAGENT__SECTION__KEY", path="environment",
                                 field=key)
            from_env.setdefault(parts[0], {})[parts[1]] = value
    config = config.updated(from_env, "environment", text=True)
    if cli:
        config = config.updated({s: {k: v for k, v in kv.items() if v is not None}
                                 for s, kv in cli.items()}, "command line")
    return config


def _read_file(path: Path) -> dict:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read config file: {exc.strerror}", path=str(path)) from exc
    try:
        if path.suffix == ".json":
            return json.loads(raw)
        return tomllib.loads(raw.decode())
    except (json.JSONDecodeError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"invalid config file: {exc}", path=str(path)) from exc
