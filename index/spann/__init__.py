"""SPANN-style disk index: head centroids in memory, posting lists on disk.

Modules: ``clustering`` (hierarchical balanced k-means), ``replication`` (boundary
replication with the RNG rule), ``postings`` (on-disk format, writer, reader), ``builder``
(``build_spann``), ``opening`` (verification on open), ``searcher`` (``SpannIndex``).
Tested by ``tests/test_spann.py``.
"""

from index.spann.builder import SpannParams, build_spann
from index.spann.searcher import SpannIndex

__all__ = ["SpannIndex", "SpannParams", "build_spann"]
