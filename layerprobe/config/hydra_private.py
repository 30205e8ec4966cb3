"""Every name layerprobe takes from Hydra's private modules (`hydra._internal`), in one place.

Hydra offers no public API to compose with a caller's search path and then hand the composed config to
its own job runner or sweeper (what `hydra.main` does inside), so the CLI uses these directly; a grid
sweep's rerun lists its jobs as Hydra's basic sweeper splits them (`BasicSweeper.split_arguments`).
`tests/test_hydra_private.py` fails when a Hydra release moves or changes one of them. Import them
lazily: this module imports Hydra's internals when it is imported.
"""

from __future__ import annotations

from hydra._internal.callbacks import Callbacks
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra._internal.hydra import Hydra
from hydra._internal.utils import create_config_search_path, get_args_parser, run_and_report

__all__ = ["BasicSweeper", "Callbacks", "Hydra", "create_config_search_path", "get_args_parser", "run_and_report"]
