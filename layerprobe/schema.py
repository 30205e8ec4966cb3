"""The config's schema: one dataclass per section, each default beside its reason. Hydra checks every
YAML file against it (config.compose registers it); `config.loaded.load` turns a checked config into
these classes, which is what the rest of layerprobe reads. No TensorFlow, no Hydra, no layerprobe
module but errors: every layer may import it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from omegaconf import MISSING

from layerprobe.errors import ConfigError, first_line


@dataclass
class InputSpec:
    shape: List[int] = MISSING  # per example, without the batch axis
    dtype: str = "float32"  # the feature's dtype as the data source yields it


@dataclass
class HeadSpec:
    """What one output layer is trained against."""

    label: str = "label"  # key of the label in the data's label dict
    loss: str = "sparse_softmax_cross_entropy"  # | sigmoid_cross_entropy | mean_squared_error
    weight: float = 1.0  # of this head's loss in the sum over heads
    # accuracy | mean_absolute_error | root_mean_squared_error
    metrics: List[str] = field(default_factory=lambda: ["accuracy"])


@dataclass
class ModelConfig:
    name: str = MISSING  # names the model_dir (models/<name>-<hash>) and the runs
    inputs: Dict[str, InputSpec] = MISSING  # model input name -> its per-example shape and dtype
    # Ordered mapping: layer name -> {type, inputs?, expose?, **constructor args}, or a block instance
    # {block, repeat?, inputs?, expose?, trainable?, **block parameters} (layerprobe/config/blocks.py).
    layers: Dict[str, Any] = MISSING
    # Block name -> {params: {name: default, null = required}, inputs?, layers, output?}.
    blocks: Dict[str, Any] = field(default_factory=dict)
    # Output layer name -> head; empty means the last layer with the default head.
    outputs: Dict[str, HeadSpec] = field(default_factory=dict)


@dataclass
class SplitConfig:
    """How train and eval are cut: by a seeded fraction, by row ranges, or read from separate files."""

    method: str = "fraction"  # fraction | range | files
    eval_fraction: float = 0.2  # method=fraction: share of examples held out for evaluation and probing
    seed: int = 0  # method=fraction: the split's own seed, so that model seeds do not move examples
    train_range: Optional[List[Optional[int]]] = None  # method=range: [start, stop) rows; stop null = the end
    eval_range: Optional[List[Optional[int]]] = None  # method=range: the eval rows, the same way
    # method=files: the eval split is a second read of the source with these params over data.params
    # (on the command line: +data.splits.eval_params.path=eval.csv; `+` because the dict starts empty).
    eval_params: Dict[str, Any] = field(default_factory=dict)


@dataclass
class DataConfig:
    name: str = MISSING  # names the data in the run (its dataset inputs, the run name)
    # digits | iris | wine | breast_cancer | synthetic | npz | csv | tfrecord | image_folder | tfds
    source: str = MISSING
    # Source-specific arguments: sizes, paths, which arrays/columns/records are the features and labels.
    params: Dict[str, Any] = field(default_factory=dict)
    num_classes: Optional[int] = None  # when set, every integer label must lie in [0, num_classes)
    splits: SplitConfig = field(default_factory=SplitConfig)
    # Transforms applied in the tf.data graph, in order: [{name: scale, factor: 0.0625}, ...].
    transforms: List[Any] = field(default_factory=list)
    shuffle_buffer: int = 2048  # >= the digits train split, so the shuffle is a full one
    shuffle_seed: Optional[int] = None  # None = trainer.seed
    batch_size: int = 64  # train and eval batches (the probe's too unless probe.batch_size)
    cache: str = "memory"  # memory | file | none; taken after the deterministic transforms
    cache_dir: str = ".cache/layerprobe"  # cache=file: one file set per split and data digest
    repeat: Optional[int] = None  # train epochs; None = forever, the Estimator stops at train_steps
    prefetch: int = -1  # -1 = tf.data.AUTOTUNE
    skip_corrupt: bool = False  # streamed files: skip records that do not parse or decode, counted (tag
    # data.skipped_records), instead of refusing the file with one line naming it and the record


@dataclass
class OptimizerConfig:
    name: str = "adam"  # adam | sgd | momentum | rmsprop | adagrad
    learning_rate: float = 0.001  # the optimizer's step size


@dataclass
class WarmStartConfig:
    """Initial values of the model's variables from elsewhere (only when model_dir has no checkpoint)."""

    source: Optional[str] = None  # a checkpoint prefix | a model_dir | an MLflow run id | a Keras .h5 file
    variables: str = ".*"  # regex over variable names (`conv1/kernel`, `backbone/.*`): which start warm
    rename: Dict[str, str] = field(default_factory=dict)  # model variable -> its name in the source


@dataclass
class TrainerConfig:
    # estimator: tf.estimator on TensorFlow 2.13-2.15 (`make venv`); keras: Keras 3 `fit` on TensorFlow
    # >= 2.16 (`make venv-keras`). Each validates layers against its own Keras's layer table.
    engine: str = "estimator"
    seed: int = 42  # graph seed, Keras initialisers, shuffle and augmentation (not the split: data.splits.seed)
    deterministic: bool = True  # op determinism: reruns are bitwise identical on CPU
    train_steps: int = 1000  # the step budget; not in the model_dir hash: raising it continues training
    eval_steps: Optional[int] = None  # None = the whole eval split
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    # None = models/<experiment>-<hash of what shapes training>, so rerunning a command resumes.
    model_dir: Optional[str] = None
    save_checkpoints_steps: int = 500  # a checkpoint every N steps (and at the end); dynamics and pruning use them
    keep_checkpoint_max: int = 3  # the newest N rotate; a run's own checkpoint is kept apart (model_dir/kept/)
    log_every_steps: int = 100  # train/loss and train/steps_per_sec every N steps
    # none | mirrored (one process, all GPUs, else cpu_replicas CPU devices) | multi_worker_mirrored |
    # parameter_server (both across the processes named in TF_CONFIG: `layerprobe cluster --workers N`)
    distribute: str = "none"
    cpu_replicas: int = 2  # distribute=mirrored on a machine without GPUs: CPU devices used as replicas
    warm_start: WarmStartConfig = field(default_factory=WarmStartConfig)


@dataclass
class DynamicsConfig:
    """Probing while the model trains: the first `examples` of the probe split at each probe point."""

    enabled: bool = True  # false: training as before, one probe after it
    # checkpoint (every trainer.save_checkpoints_steps) | N (every N steps) | [steps]; the
    # initialised model (step 0) is probed too when training starts from scratch.
    every: Any = "checkpoint"
    # The first `examples` of the probe split, the same at every point and in every run (cost grows
    # linearly); None: 256, or the whole split when it is smaller.
    examples: Optional[int] = None
    linear_every: int = 1  # linear probes at every k-th probe point (0: never); sklearn time
    cka: bool = True  # CKA of each layer against its own final-checkpoint representation
    histograms: bool = True  # TensorBoard histogram events, from the sketch


@dataclass
class ProbeConfig:
    enabled: bool = True  # false: train and evaluate only
    split: str = "eval"  # the split the probe reads: eval | train
    layers: List[str] = field(default_factory=list)  # exposed in addition to `expose: true`
    max_examples: Optional[int] = None  # None = the whole split
    batch_size: Optional[int] = None  # None = data.batch_size
    percentiles: List[float] = field(default_factory=lambda: [1.0, 5.0, 50.0, 95.0, 99.0])  # read off the sketch
    relative_accuracy: float = 0.005  # of the quantile sketch; numpy's value is within 2x this
    active_threshold: float = 0.0  # a unit is active on an example when its value is > this
    saturation_margin: float = 0.01  # sigmoid/tanh values this close to a bound count as saturated
    histogram_bins: int = 60  # of the histogram drawn from the sketch
    # Examples whose raw activations are kept (the same ones for every layer), drawn uniformly with
    # trainer.seed; memory is reservoir_size x a layer's size. Linear probes and CKA use them.
    reservoir_size: int = 512
    sample_seed: int = 0  # not trainer.seed: runs of a sweep sample the same examples, for CKA across runs
    plots: bool = True  # the PNGs (histograms, units, channels, overview, dynamics); ~0.3 s each
    analysis: bool = True  # linear probes, CKA between layers, probe/report.html
    dynamics: DynamicsConfig = field(default_factory=DynamicsConfig)


@dataclass
class TrackingConfig:
    enabled: bool = True  # false: nothing is logged to MLflow
    uri: Optional[str] = None  # None = $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the cwd
    experiment_name: str = "layerprobe"  # the MLflow experiment the runs go to
    run_name: Optional[str] = None  # None = runner.plain_run_name; a sweep's child: what the sweep varies
    objective: str = "eval/accuracy"  # what a sweep optimises and the parent's "best child" means
    direction: str = "maximize"  # of the objective: maximize | minimize
    # The trained model as an MLflow Model in the run's "Logged models" (a pyfunc over saved_model/,
    # loadable with mlflow.pyfunc.load_model, servable with `mlflow models serve`): ~1-2 s a run.
    log_model: bool = True
    # A registered model name: each run's logged model becomes its next version (a sweep: only the
    # best trial's). None: nothing is registered.
    register_model: Optional[str] = None


@dataclass
class LayerprobeConfig:
    data: DataConfig = MISSING
    model: ModelConfig = MISSING
    trainer: TrainerConfig = MISSING
    probe: ProbeConfig = MISSING
    tracking: TrackingConfig = MISSING


@contextlib.contextmanager
def schema_error() -> Iterator[None]:
    """OmegaConf's error merging a mapping into the schema as one ConfigError naming the key."""
    from omegaconf.errors import ConfigKeyError, MissingMandatoryValue, OmegaConfBaseException

    try:
        yield
    except MissingMandatoryValue as e:  # `???` in a config file: a value the user must give
        key = str(e.full_key)
        raise ConfigError(key, "???", f"no value given: give one on the command line ({key}=...)") from None
    except ConfigKeyError as e:  # a key the schema does not have: the closest one it has
        full_key = str(e.full_key)
        parent = full_key.rpartition(".")[0] or "the config"
        known = [str(k) for k in e.parent_node.keys()] if e.parent_node is not None else None
        raise ConfigError(full_key, e.key, f"{parent} has no such key", known) from None
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or "config"
        raise ConfigError(key, getattr(e, "value", None), first_line(e)) from None


def data_config(cfg: Mapping[str, Any]) -> DataConfig:
    """A `data` section alone (a test's, a benchmark's) typed against the schema; errors name `data.<key>`."""
    from omegaconf import OmegaConf

    with schema_error():
        node = OmegaConf.merge(OmegaConf.structured(LayerprobeConfig), {"data": dict(cfg)}).data
        typed = OmegaConf.to_object(node)
    assert isinstance(typed, DataConfig)
    return typed
