"""Probe: streaming activation statistics computed in-graph per batch and merged on the host.

`graph_stats` builds the per-batch reductions (TensorFlow); `accumulate`, `sketch` and `plots` are
numpy/matplotlib only. Nothing here imports mlflow or hydra.
"""
