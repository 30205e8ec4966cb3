"""The fused probe kernel: every per-batch summary of one layer in one pass (a C++ TensorFlow op).

`summaries.cc` is the op, compiled by `build.py` at install time; `kernel.py` loads it, chooses the
path the probe takes (`choose`) and calls the op (`summaries`).
"""
