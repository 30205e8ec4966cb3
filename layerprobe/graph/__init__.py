"""Layer specs -> Keras functional tensors. Knows nothing of engines.

build.py calls every layer of the (block-expanded) config in order; applications.py makes a Keras
application or a user's model-returning function one layer whose inner layers are tensors of the
graph too (`backbone/conv4_block6_out`); patterns.py resolves exposed names and glob patterns;
warm.py matches a warm-start checkpoint against the model's variables; pretrained.py makes weights
from outside the config local files for it (an application's `imagenet` from Keras's own cache, a
saved model's `type: model_file`); keys.py names the weights in checkpoints the same under Keras 2
and Keras 3.
"""

from layerprobe.graph.build import Graph, build, resolve_layer_class

__all__ = ["Graph", "build", "resolve_layer_class"]
