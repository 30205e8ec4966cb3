"""The Estimator engine (TensorFlow 2.13-2.15): import `engine.EstimatorEngine` through `layerprobe.engines`."""
