"""searchagent: an adaptive retrieval-augmented search agent.

Data flow: corpus -> ``index`` (build) -> ``retrievers`` -> strategies -> agent ->
REST server / ``eval`` harness, with ``policies`` choosing the strategy per question.
"""

__version__ = "0.1.0"
