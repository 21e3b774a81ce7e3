"""Query-time retrieval: doc store, BM25, dense, hybrid fusion, coarse-to-fine funnel."""
