"""The sweeper's config schema, registered as `hydra/sweeper: layerprobe_optuna`. No `from __future__
import annotations`: Hydra's plugin scan runs this module before it is in sys.modules, where
dataclasses look string annotations up."""

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class SamplerConf:
    name: str = "tpe"  # tpe | random | grid | cmaes
    seed: Optional[int] = None  # trial N draws with seed + N: reruns and shared studies never repeat one


@dataclass
class PrunerConf:
    """null = Optuna's default for the chosen pruner; steps are training steps (checkpoints)."""

    name: str = "none"  # none | median | successive_halving | hyperband
    n_startup_trials: Optional[int] = None  # median: trials that finish before any is pruned (5)
    n_warmup_steps: Optional[int] = None  # median: steps of a trial before it can be pruned (0)
    interval_steps: Optional[int] = None  # median: steps between pruning checks (1)
    min_resource: Optional[Any] = None  # successive_halving, hyperband: "auto" or steps
    max_resource: Optional[Any] = None  # hyperband: "auto" or steps
    reduction_factor: Optional[int] = None  # successive_halving (4), hyperband (3)


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.layerprobe_sweeper.sweeper.OptunaSweeper"
    direction: str = "maximize"  # conf/sweep/optuna.yaml sets ${tracking.direction}
    n_trials: int = 20  # trials of the study in total, over reruns and processes sharing it
    n_jobs: int = 2  # trials asked per batch (in parallel only with a parallel launcher)
    storage: Optional[str] = None  # RDB URL or journal file; null = <sweep dir>/optuna.journal (not resumable)
    study_name: Optional[str] = None  # null = derived from the objective, direction and search space
    sampler: SamplerConf = field(default_factory=SamplerConf)
    pruner: PrunerConf = field(default_factory=PrunerConf)
    max_failure_rate: float = 1.0  # stop the sweep when a batch fails more often than this
    heartbeat_seconds: float = 30.0  # a running trial is marked alive this often
    stale_after: float = 120.0  # a trial of another host unseen this long is failed and run again
    params: Optional[Dict[str, str]] = None  # key -> search space in the override grammar


ConfigStore.instance().store(
    group="hydra/sweeper", name="layerprobe_optuna", node=OptunaSweeperConf, provider="layerprobe"
)
