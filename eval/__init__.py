"""Evaluation harness: dataset loaders, corpus pooling, metrics, runner, reports, plots."""
