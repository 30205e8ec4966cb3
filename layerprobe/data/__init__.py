"""Data: sources (numpy, no TensorFlow) and the tf.data pipeline behind the Estimator's input_fn."""
