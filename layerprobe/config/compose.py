"""Composition: overrides -> a DictConfig, through one Hydra instance; every failure one OverrideError.

The CLI and the subcommands compose here, so a config is composed the same way everywhere and a
mistake reads the same everywhere: the override it is about, the rule, and a suggestion that works.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from layerprobe.config.locations import resolve_paths
from layerprobe.config.paths import CONF_DIR, EXPERIMENTS_DIR
from layerprobe.errors import ConfigError, LayerprobeError, did_you_mean

TASK_NAME = "layerprobe"
Composer = Callable[[Sequence[str]], Any]  # overrides -> the composed config, on one search path
GROUPS = ("data", "model", "trainer", "probe", "tracking", "experiments")  # conf/'s config groups
LOGGED_CONFIG = "logged_run"  # the name a run's logged config composes under (compose_logged)


class OverrideError(LayerprobeError):
    """Hydra could not compose the config from the overrides given."""


def parse_overrides(overrides: Sequence[str]) -> list[Any]:
    """Hydra's own parse of each override (sweeps included); the first that does not parse is named."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    parsed = []
    for o in overrides:
        try:
            parsed.append(parser.parse_override(o))
        except HydraException as e:
            raise OverrideError(f"cannot parse override {o!r}: {one_line_hydra_error(e)}") from None
    return parsed


@contextlib.contextmanager
def hydra_session(config_dir: str | None = None) -> Iterator[Any]:
    """A Hydra instance over conf/ (and `config_dir`, searched first, as `--config-dir` does), for
    the duration of the block."""
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf.errors import OmegaConfBaseException
    from yaml import YAMLError

    from layerprobe.config.hydra_private import Hydra, create_config_search_path

    try:
        register_configs()  # reads experiments/*.yaml
    except (YAMLError, OmegaConfBaseException) as e:
        raise OverrideError(one_line_hydra_error(e)) from None
    search_path = create_config_search_path(f"file://{CONF_DIR}")
    if config_dir is not None:
        if not os.path.isdir(config_dir):
            raise OverrideError(f"--config-dir: not a directory. Received: {config_dir!r}")
        search_path.prepend("command-line", f"file://{os.path.abspath(config_dir)}")
    GlobalHydra.instance().clear()
    try:
        yield Hydra.create_main_hydra2(task_name=TASK_NAME, config_search_path=search_path)
    finally:
        GlobalHydra.instance().clear()


def compose_in(hydra: Any, overrides: Sequence[str], config_name: str = "config", multirun: bool = False) -> Any:
    """The composed DictConfig with its `hydra` node (for a sweep: the sweep's own config)."""
    from hydra.types import RunMode

    parse_overrides(overrides)
    _check_experiments(overrides)
    mode = RunMode.MULTIRUN if multirun else RunMode.RUN
    try:
        cfg = hydra.compose_config(config_name, list(overrides), run_mode=mode, from_shell=True)
    except Exception as e:

        def others(rest: Sequence[str]) -> Any:  # the same search path (--config-dir, a logged config)
            return hydra.compose_config(config_name, list(rest), run_mode=RunMode.RUN, from_shell=True)

        raise folded_error(e, overrides, config_name, others) from None
    resolve_paths(cfg, overrides, cfg.hydra.runtime.choices)  # a file's relative paths: from the repository root
    return cfg


def compose(overrides: Sequence[str] = (), config_name: str = "config", config_dir: str | None = None) -> Any:
    """The composed DictConfig without the `hydra` node, as a run sees it (for subcommands and tests)."""
    from omegaconf import open_dict, read_write

    with hydra_session(config_dir) as hydra:
        cfg = compose_in(hydra, overrides, config_name)
    with read_write(cfg), open_dict(cfg):
        del cfg["hydra"]
    return cfg


def compose_logged(logged: Mapping[str, Any], overrides: Sequence[str] = ()) -> Any:
    """A run's logged config with `overrides`, composed as every command composes (the schema, Hydra's
    override grammar and its errors): the logged config is the primary config, so a key it has is
    overridden as `key=value` and a group choice (`model=...`) is refused. Without the `hydra` node."""
    import tempfile

    import yaml

    for o in overrides:
        key = o.lstrip("+~").partition("=")[0]
        if key in GROUPS:
            raise OverrideError(
                f"{o}: a logged run's config has no config groups to choose from; override its keys "
                f"({key}.<key>=value), or start a new run with {o}"
            )
    primary = {"defaults": ["layerprobe_schema", "_self_"], **{k: v for k, v in logged.items() if k != "defaults"}}
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, LOGGED_CONFIG + ".yaml").write_text(yaml.safe_dump(primary, sort_keys=False))
        return compose(overrides, config_name=LOGGED_CONFIG, config_dir=tmp)


def plain(cfg: Any) -> Any:
    """`cfg` resolved into plain containers. An interpolation that cannot resolve (one pointing at a
    `???` still to be given, or at a key that does not exist) is one ConfigError naming the key."""
    from omegaconf import OmegaConf
    from omegaconf.errors import InterpolationResolutionError

    try:
        return OmegaConf.to_container(cfg, resolve=True)
    except InterpolationResolutionError as e:
        reason = str(e).splitlines()[0].split(" while resolving interpolation: ")[-1]
        raise ConfigError(str(e.full_key), _raw(e), f"cannot be resolved ({reason})") from None


def _raw(e: Any) -> Any:
    """The interpolation text of the key `e` names (`${...}`), read without resolving it."""
    try:
        return e.parent_node._get_node(e.key)._value()
    except Exception:  # noqa: BLE001 - the message is still useful without the raw value
        return None


def _check_experiments(overrides: Sequence[str]) -> None:
    """`experiments` is an optional group, so Hydra silently ignores a name it does not hold."""
    known = sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.yaml") if not p.name.endswith(".baseline.yaml"))
    for o in overrides:
        key, _, value = o.partition("=")
        if key.lstrip("+") != "experiments" or value in ("", "null"):
            continue
        for name in value.split(","):
            if name not in known:
                raise ConfigError("experiments", name, f"no such experiment in {EXPERIMENTS_DIR}", known)


def folded_error(
    e: Exception, overrides: Sequence[str], config_name: str = "config", composer: Composer | None = None
) -> LayerprobeError:
    """Hydra's error about these overrides as one OverrideError; anything else is re-raised.
    `composer`: composes the config from other overrides on the same search path (default: conf/)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException
    from yaml import YAMLError

    if not isinstance(e, (HydraException, OmegaConfBaseException, YAMLError, OSError, ValueError)):
        raise e  # not the user's input: a bug, shown as one
    missing = getattr(e, "missing_cfg_file", None)
    options = [str(o) for o in getattr(e, "options", None) or []]
    if missing and "/" in missing and options:  # `group=option` with no such option
        group, _, option = missing.rpartition("/")
        close = did_you_mean(option, options)
        given = next((o for o in overrides if o.lstrip("+~").partition("=")[0] == group), group)
        plus = given[: len(given) - len(given.lstrip("+~"))]
        hint = f" Did you mean {plus}{group}={close}?" if close else ""
        return OverrideError(f"Could not find '{missing}'.{hint} Available options in '{group}': {', '.join(options)}")
    if missing:
        return OverrideError(f"--config-name: no config {missing!r} on the search path (conf/ and --config-dir)")
    text = str(e)
    cause = e.__cause__ or e.__context__
    found = re.match(r"Could not override '([^']+)'", text)
    key = found.group(1) if found else None
    if key is None and "not in" in str(cause) and getattr(cause, "full_key", None):  # `+key=v` on a schema
        key = str(cause.full_key)  # type: ignore[union-attr]
    if key is not None:
        override = next((o for o in overrides if o.lstrip("+~").partition("=")[0] == key), None)
        if override is not None:
            rest = [o for o in overrides if o != override]
            return OverrideError(unknown_key_message(key, override.partition("=")[2], rest, config_name, composer))
    return OverrideError(one_line_hydra_error(e))


def unknown_key_message(
    key: str, value: str, others: Sequence[str], config_name: str = "config", composer: Composer | None = None
) -> str:
    """`Could not override 'trainer.train_step'`, with the closest key that exists (or, where the
    config takes new keys, how to add it); never a suggestion that would fail in turn."""
    from omegaconf import DictConfig, OmegaConf

    known = _known_config(others, config_name, composer)
    parts = key.split(".")
    node, depth = known, 0
    while depth < len(parts) - 1 and isinstance(node, DictConfig) and parts[depth] in node:
        node, depth = node[parts[depth]], depth + 1
    parent, missing = ".".join(parts[:depth]), parts[depth]
    present = [str(k) for k in node.keys()] if isinstance(node, DictConfig) else []
    addable = _addable_keys(parent, node, present) if depth == len(parts) - 1 else []
    where = parent or "the config"
    msg = f"Could not override '{key}': {where} has no key {missing!r}"
    close = did_you_mean(missing, present + addable)
    if close is not None:
        fixed = ".".join([*parts[:depth], close, *parts[depth + 1 :]])
        plus = "+" if close not in present else ""
        return f"{msg}. Did you mean {plus}{fixed}={value}?"
    if addable == ["*"] or missing in addable:
        return f"{msg}. To add it: +{key}={value}"
    if isinstance(node, DictConfig) and OmegaConf.is_config(node):
        return f"{msg}. Keys of {where}: {', '.join(sorted(present))}"
    return msg


def _known_config(overrides: Sequence[str], config_name: str, composer: Composer | None) -> Any:
    """The config without the failing override; the bare schema when the rest fails too."""
    from omegaconf import OmegaConf

    from layerprobe.schema import LayerprobeConfig

    try:
        return composer(overrides) if composer is not None else compose(overrides, config_name)
    except Exception:  # noqa: BLE001 - any failure of the rest: the schema still names the keys
        return OmegaConf.structured(LayerprobeConfig)


def _addable_keys(parent: str, node: Any, present: list[str]) -> list[str]:
    """Keys that `+parent.key=...` can add and that validation then accepts: a layer's constructor
    arguments it does not set yet; any key of a free-form mapping ("*"); none of a schema's node."""
    from omegaconf import DictConfig, OmegaConf

    from layerprobe.config.layer_table import load_table

    if not isinstance(node, DictConfig) or OmegaConf.get_type(node) is not dict:
        return []  # a structured node (trainer, probe, ...): its keys are fixed
    if re.fullmatch(r"model\.layers\.[^.]+", parent):
        ltype = node.get("type")
        args = load_table()["layers"].get(ltype, {}).get("args", []) if isinstance(ltype, str) else []
        return [a for a in ["inputs", "expose", *args] if a not in present]
    return ["*"]


def one_line_hydra_error(e: BaseException) -> str:
    """Hydra's multi-line messages folded to one line, without the object_type/full_key noise."""
    text = str(e)
    cause = e.__cause__ or e.__context__
    if cause is not None and str(cause).strip() not in ("", "None") and str(cause).strip() not in text:
        text += "\n" + str(cause)  # "Error merging override x=abc" alone hides why
    text = text.split("Config search path:", 1)[0]  # the search path is noise for a missing option
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    keep = [
        ln for ln in lines if not ln.startswith(("object_type", "full_key", "reference_type", "Set the environment"))
    ]
    return "; ".join(keep)


def register_configs() -> None:
    """Register the schema (every YAML file is checked against it, in struct mode) and the
    experiment files of `experiments/` as the config group `experiments`."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    from layerprobe.schema import LayerprobeConfig

    cs = ConfigStore.instance()
    cs.store(name="layerprobe_schema", node=LayerprobeConfig)
    for path in sorted(EXPERIMENTS_DIR.glob("*.yaml")):
        if not path.name.endswith(".baseline.yaml"):
            cs.store(group="experiments", name=path.stem, node=OmegaConf.load(path), package="_global_")
