"""SPANN-style disk index: head centroids in memory, posting lists on disk.

Modules: ``clustering`` (hierarchical balanced k-means), ``replication`` (boundary
replication with the RNG rule), ``postings`` (on-disk format, writer, reader), ``builder``
(``build_spann``), ``opening`` (verification on open), ``searcher`` (``SpannIndex``).
Updates in place (SPFresh's LIRE): ``lire`` (``SpannUpdater``: insert, delete, commit,
compact), ``placement`` (inserts by the build's rules), ``rebalance`` (split, reassign,
merge, compaction), ``store`` (copy-on-write posting writes into free space), ``leases``
(which generations readers hold), ``heads`` (head index without dead heads),
``generations`` (per-generation files, ``rollback``, ``cleanup``). Tested by
``tests/test_spann.py``, ``tests/test_spann_updates.py`` and ``tests/test_spann_space.py``.
"""

from index.spann.builder import SpannParams, build_spann
from index.spann.generations import cleanup, rollback
from index.spann.lire import SpannUpdater
from index.spann.searcher import SpannIndex

__all__ = ["SpannIndex", "SpannParams", "SpannUpdater", "build_spann", "cleanup", "rollback"]
