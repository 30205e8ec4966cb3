"""A sweep refused before any job starts: every job's composed config (a grid's cross product, an
Optuna search's choices and bounds) validated, and the Optuna study's settings checked (sampler,
pruner, storage, an existing study's direction and space). One line, exit 2, nothing written."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from layerprobe.errors import ConfigError, LayerprobeError

# Jobs composed and validated at most (~0.3 s each here): a larger grid is checked value by value
# (each value once, the other keys at their first value), at most 2 * LIMIT points.
LIMIT = 32


def sweep_points(cfg: Any, overrides: Sequence[str]) -> list[list[str]]:
    """Each job's overrides to check: every value of each swept key (an interval: its bounds, an
    Optuna `hydra.sweeper.params` entry too), in their cross product when it is at most LIMIT."""
    from layerprobe.config import parse_overrides
    from layerprobe.sweeps.space import parse_space

    fixed: list[str] = []
    axes: list[list[str]] = []
    for line, o in zip(overrides, parse_overrides(overrides)):
        key = o.get_key_element()
        if key.startswith(("hydra.", "+hydra.", "++hydra.")):
            continue
        if not o.is_sweep_override():
            fixed.append(line)
            continue
        try:
            axes.append([f"{key}={v}" for v in o.sweep_string_iterator()])
        except Exception:  # an interval: the Optuna sweeper's; its bounds below
            axes.append([f"{key}={v}" for v in parse_space(None, [line]).dimensions[key].values_to_check()])
    if _ours(cfg):
        given = {a[0].split("=", 1)[0] for a in axes}
        params = {k: v for k, v in (cfg.hydra.sweeper.get("params") or {}).items() if k not in given}
        for key, dim in parse_space(params, []).dimensions.items():
            axes.append([f"{key}={v}" for v in dim.values_to_check()])
    size = 1
    for axis in axes:
        size *= len(axis)
    if size <= LIMIT:
        return [fixed + list(p) for p in itertools.product(*axes)]
    first = [axis[0] for axis in axes]
    points = [fixed + first[:i] + [v] + first[i + 1 :] for i, axis in enumerate(axes) for v in axis[1:]]
    return [fixed + first, *points][: 2 * LIMIT]


def check_jobs(hydra: Any, cfg: Any, overrides: Sequence[str], name: str) -> None:
    """Compose and validate every point of `sweep_points`; the first bad one as one line."""

    from layerprobe.config import compose_in
    from layerprobe.config.compose import plain
    from layerprobe.config.validate import validate

    searched = _search_lines(cfg, overrides)
    for point in sweep_points(cfg, overrides):
        swept = [p for p in point if p not in overrides]
        try:
            job = compose_in(hydra, point, name)
        except LayerprobeError as e:  # a suggestion names the sweep's values, not the one tried
            text = str(e)
            for tried in swept:
                key, _, value = tried.partition("=")
                given = searched.get(key, tried).partition("=")[2]
                text = text.replace(f"={value}?", f"={given}?")
            raise type(e)(text) from None
        try:
            validate({k: plain(job[k]) for k in job if k != "hydra"})
        except LayerprobeError as e:  # named by the swept override when that key breaks the rule
            keys = [p.split("=", 1)[0].lstrip("+~") for p in swept]
            named = [k for k in keys if k == e.path] if isinstance(e, ConfigError) else keys
            where = " ".join(searched.get(k, k) for k in named)
            raise LayerprobeError(f"sweep value {where}: {e}" if named else str(e)) from None


def _search_lines(cfg: Any, overrides: Sequence[str]) -> dict[str, str]:
    """key -> the override that sweeps it, as given (for the message)."""
    lines = {o.split("=", 1)[0].lstrip("+~"): o for o in overrides if "=" in o}  # noqa: B035
    if _ours(cfg):
        for k, v in (cfg.hydra.sweeper.get("params") or {}).items():
            lines.setdefault(k, f"hydra.sweeper.params.{k}={v}")
    return lines


def _ours(cfg: Any) -> bool:
    return str(cfg.hydra.sweeper.get("_target_", "")).startswith("hydra_plugins.layerprobe_sweeper.")


def check_study(cfg: Any, overrides: Sequence[str]) -> None:
    """The Optuna sweeper's settings: sampler, pruner (did-you-mean), n_trials, the objective a
    pruner needs during training, and an explicit storage opened, its existing study compared."""
    if not _ours(cfg):
        return
    from omegaconf import OmegaConf

    from layerprobe.sweeps import study as S
    from layerprobe.sweeps.space import parse_space

    conf: dict[str, Any] = OmegaConf.to_container(cfg.hydra.sweeper, resolve=True)  # type: ignore[assignment]
    task = [o for o in overrides if not o.split("=", 1)[0].lstrip("+~").startswith("hydra.")]
    space = parse_space(conf.get("params"), task)
    if int(conf["n_trials"]) < 1 or int(conf["n_jobs"]) < 1:
        raise ConfigError("hydra.sweeper.n_trials", conf["n_trials"], "n_trials and n_jobs must be >= 1")
    S.make_sampler(conf["sampler"], space, None)
    S.make_pruner(conf["pruner"])
    objective = cfg.tracking.objective
    if conf["pruner"]["name"] != "none" and not objective.startswith("eval/"):
        rule = "a pruner hears the objective at each checkpoint while training: an eval/ metric, not a probe one"
        raise ConfigError("tracking.objective", objective, rule)
    if conf.get("storage"):
        s = S.settings(conf, str(cfg.hydra.sweep.dir), objective, space, task)
        try:
            S.load_study(s, space, create=False)
        except LayerprobeError as e:
            if not str(e).startswith("no study "):
                raise
