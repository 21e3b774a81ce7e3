"""``make_generator(config.generator)``: one place that maps the config to a backend."""

from __future__ import annotations

from searchagent.config import GeneratorConfig
from searchagent.errors import InputError
from searchagent.generators.base import Generator

BACKENDS = ("llama_cpp", "transformers", "openai")


def make_generator(config: GeneratorConfig | None = None, sessions: int = 4) -> Generator:
    """Build the configured generator (heavy imports happen only for the chosen one).

    ``sessions``: how many concurrent sessions' KV states a llama.cpp backend keeps for
    prefix reuse between hops (the server passes its session count).
    """
    config = config or GeneratorConfig()
    if config.backend == "llama_cpp":
        from searchagent.generators.llama_cpp import LlamaCppGenerator

        return LlamaCppGenerator(config.model, threads=config.threads,
                                 context_tokens=config.context_tokens, session_states=sessions)
    if config.backend == "transformers":
        from searchagent.generators.hf_transformers import TransformersGenerator

        return TransformersGenerator(config.model, threads=config.threads,
                                     context_tokens=config.context_tokens)
    if config.backend == "openai":
        from searchagent.generators.openai_http import OpenAIHTTPGenerator

        return OpenAIHTTPGenerator(config.base_url, model=config.model, api_key=config.api_key,
                                   timeout_s=config.timeout_s, retries=config.retries)
    raise InputError(f"unknown generator backend {config.backend!r} (choose from "
                     f"{', '.join(BACKENDS)})", field="generator.backend")
