"""Training dynamics: the probe session at several points of training, on a fixed subset of the probe
split, as metric series, TensorBoard histograms, plots and a report section."""
