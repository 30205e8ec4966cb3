"""layerprobe: configuration-driven TensorFlow Estimator experiments that look inside the model."""

__version__ = "0.1.0"
