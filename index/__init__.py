"""Offline index building and the on-disk formats: corpus -> INDEX_DIR."""
