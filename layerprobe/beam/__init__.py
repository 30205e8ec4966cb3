"""`layerprobe probe RUN --beam`: the probe as an Apache Beam pipeline (options: the flags, checked without
TensorFlow; pipeline: the DoFn, the CombineFn and the driver that logs like `layerprobe probe`)."""
