"""``make_strategy(name, searcher, generator, config)``: build one arm from the config."""

from __future__ import annotations

from searchagent.config import Config
from searchagent.errors import InputError
from searchagent.strategies.base import ARMS, Strategy


def make_strategy(name: str, searcher, generator, config: Config | None = None) -> Strategy:
    """``searcher`` is an opened ``retrievers.searcher.Searcher`` (unused by parametric)."""
    config = config or Config()
    agent, retrieval, gen = config.agent, config.retrieval, config.generator
    if name == "parametric":
        from searchagent.strategies.parametric import ParametricStrategy

        return ParametricStrategy(generator, max_new_tokens=min(gen.max_new_tokens, 32))
    if searcher is None:
        raise InputError(f"strategy {name!r} needs an index", field="index_dir")
    if name == "single":
        from searchagent.strategies.single import SingleStrategy

        return SingleStrategy(searcher.retriever(retrieval.mode), generator, k=retrieval.k,
                              context_budget_tokens=agent.context_budget_tokens,
                              max_new_tokens=gen.max_new_tokens)
    if name == "multi":
        from retrievers.funnel import FunnelRetriever
        from searchagent.strategies.multi import MultiHopStrategy

        reranker = None
        if retrieval.reranker:
            from retrievers.reranker import CrossEncoderReranker

            reranker = CrossEncoderReranker(retrieval.reranker)
        funnel = FunnelRetriever(searcher, coarse_k=retrieval.funnel_coarse_k,
                                 shortlist=retrieval.funnel_shortlist, reranker=reranker)
        if searcher.windows_per_doc:
            from retrievers.windows import CollapsingRetriever

            funnel = CollapsingRetriever(funnel, searcher.windows_per_doc)
        return MultiHopStrategy(funnel, generator, k=retrieval.k, max_hops=agent.max_hops,
                                context_budget_tokens=agent.context_budget_tokens,
                                hop_query=agent.hop_query, max_new_tokens=gen.max_new_tokens,
                                shots=agent.fewshot)
    raise InputError(f"unknown strategy {name!r} (choose from {', '.join(ARMS)})",
                     field="strategy")
