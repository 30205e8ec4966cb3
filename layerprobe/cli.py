"""`layerprobe [overrides]` trains, evaluates, probes and logs; subcommands look without training.

The only module with `@hydra.main`. TensorFlow and mlflow are imported inside the commands that
need them, so `--help`, `--cfg job` and `validate` answer in well under a second and a half.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from layerprobe.config import CONF_DIR, compose
from layerprobe.errors import LayerprobeError

log = logging.getLogger("layerprobe")
USER_ERROR = 2


def _fail(e: LayerprobeError) -> int:
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise e
    print(f"layerprobe: error: {e}", file=sys.stderr)
    return USER_ERROR


def _plain(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def _task(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from layerprobe.config.validate import validate

    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    try:
        c = _plain(cfg)
        validate(c)
        from layerprobe.runner import run

        result = run(c, hc.runtime.output_dir, list(hc.overrides.task))
    except LayerprobeError as e:
        if multirun:  # the launcher records the failed job; the other jobs go on
            raise
        sys.exit(_fail(e))
    _report(result)
    return next(iter(result.eval_metrics.values()), None)


def _report(result: Any) -> None:
    print(f"model_dir: {result.model_dir} (global step {result.global_step})")
    for k, v in result.eval_metrics.items():
        print(f"{k}: {v:.4f}")
    for layer, s in result.probe.items():
        dead = f"{s.dead_count}/{s.units}"
        print(f"probe/{layer}: mean {s.mean:.4g} std {s.std:.4g} zeros {s.zero_fraction:.1%} dead units {dead}")
    if result.run_id:
        print(f"mlflow run: {result.run_id}")
        print(f"open the UI: mlflow ui --backend-store-uri {result.tracking_uri}")


def run_command(argv: Sequence[str]) -> int:
    import hydra

    from layerprobe.config.schema import register_configs

    if not any(a.startswith("-") for a in argv):  # a single run: compose once to fail early and briefly
        try:
            from layerprobe.config.validate import validate

            validate(compose(argv))
        except LayerprobeError as e:
            return _fail(e)
    register_configs()
    sys.argv = [sys.argv[0], *argv]
    hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")(_task)()
    return 0


def validate_command(argv: Sequence[str]) -> int:
    """`layerprobe validate [overrides]`: compose and check the config, print the layer plan."""
    from layerprobe.config.validate import validate
    from layerprobe.runner import exposed_layers

    try:
        c = _plain(compose(argv))
        validate(c)
    except LayerprobeError as e:
        return _fail(e)
    exposed = exposed_layers(c)
    print(f"config OK: model {c['model']['name']} ({len(c['model']['layers'])} layers), data {c['data']['name']}")
    print(f"exposed layers: {', '.join(exposed) or '(none)'}")
    return 0


def data_command(argv: Sequence[str]) -> int:
    """`layerprobe data [overrides]`: split sizes, element spec and a few examples; no model."""
    try:
        c = _plain(compose(argv))
        from layerprobe.data.pipeline import dataset, prepare

        data = prepare(c["data"])
    except LayerprobeError as e:
        return _fail(e)
    print(f"data {data.name}: sizes {data.sizes()} sha256 {data.digest[:16]}")
    ds = dataset(data, "train", training=False, batch_size=c["data"]["batch_size"], seed=0, max_examples=3)
    feats, labels = ds.element_spec
    for kind, spec in (("feature", feats), ("label", labels)):
        for name, s in spec.items():
            print(f"  {kind} {name}: {s.dtype.name} {s.shape.as_list()[1:]}")
    for f, y in ds.unbatch().take(3).as_numpy_iterator():
        shown = {k: (v.round(3).ravel()[:6].tolist(), "...") for k, v in f.items()}
        print(f"  example: {shown} labels { ({k: v.tolist() for k, v in y.items()}) }")
    return 0


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "validate": validate_command,
    "data": data_command,
}


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in COMMANDS:
        return COMMANDS[args[0]](args[1:])
    return run_command(args)


if __name__ == "__main__":
    sys.exit(main())
