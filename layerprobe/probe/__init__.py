"""Probe: streaming activation statistics computed in-graph per batch and folded there into state
that the host reads once per pass.

`graph_stats` builds the per-batch reductions and `graph_fold` their fold (TensorFlow); `accumulate`
(the state on the host: load, shards' merge, results), `sketch` and `plots` are numpy/matplotlib
only. Nothing here imports mlflow or hydra.
"""
