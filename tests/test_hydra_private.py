"""What layerprobe takes from Hydra's private modules (config/hydra_private.py) still exists and still
takes the arguments layerprobe passes: a Hydra release that moves or changes one fails here first."""

from __future__ import annotations

import inspect

from layerprobe.config import hydra_private as hp


def _params(fn: object) -> list[str]:
    return list(inspect.signature(fn).parameters)  # type: ignore[arg-type]


def test_the_hydra_class_composes_and_shows_as_the_cli_calls_it():
    assert {"task_name", "config_search_path"} <= set(_params(hp.Hydra.create_main_hydra2))
    assert {"config_name", "overrides", "run_mode", "from_shell"} <= set(_params(hp.Hydra.compose_config))
    for method, args in {
        "app_help": {"config_name", "args_parser", "args"},
        "hydra_help": {"config_name", "args_parser", "args"},
        "show_cfg": {"config_name", "overrides", "cfg_type", "package", "resolve"},
        "show_info": {"info", "config_name", "overrides"},
        "shell_completion": {"config_name", "overrides"},
    }.items():
        assert args <= set(_params(getattr(hp.Hydra, method))), method


def test_a_search_path_takes_a_directory_before_conf():
    path = hp.create_config_search_path("file:///nowhere/conf")
    path.prepend("command-line", "file:///nowhere/extra")
    found = [(p.provider, p.path) for p in path.get_path()]
    assert found[0] == ("command-line", "file:///nowhere/extra")
    assert ("main", "file:///nowhere/conf") in found


def test_the_argument_parser_has_every_flag_the_cli_reads():
    args = hp.get_args_parser().parse_args(["-m", "--config-dir", "d", "--config-name", "n", "a=1"])
    for name in (
        "run",
        "multirun",
        "cfg",
        "info",
        "shell_completion",
        "resolve",
        "experimental_rerun",
        "help",
        "hydra_help",
        "package",
    ):
        assert hasattr(args, name), name
    assert (args.multirun, args.config_dir, args.config_name, args.overrides) == (True, "d", "n", ["a=1"])


def test_callbacks_and_run_and_report_run_what_they_are_given():
    for hook in ("on_run_start", "on_run_end", "on_multirun_start", "on_multirun_end"):
        assert callable(getattr(hp.Callbacks, hook)), hook
    assert hp.run_and_report(lambda: 42) == 42


def test_the_basic_sweeper_splits_a_grid_into_jobs_as_a_rerun_lists_them():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = OverridesParser.create().parse_overrides(["a=1,2", "b=x", "c=3,4"])
    (jobs,) = hp.BasicSweeper.split_arguments(overrides, None)
    assert jobs == [["a=1", "b=x", "c=3"], ["a=1", "b=x", "c=4"], ["a=2", "b=x", "c=3"], ["a=2", "b=x", "c=4"]]
