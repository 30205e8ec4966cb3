"""The command line: `layerprobe [overrides]` runs an experiment, `layerprobe COMMAND` the rest.

`main` is the console entry point (`layerprobe.cli:main`, `python -m layerprobe`); `COMMANDS` maps
each subcommand to its function. TensorFlow and mlflow are imported inside the commands that need
them, so `--help`, `--cfg job` and `validate --static` answer in well under a second and a half.
"""

from layerprobe.cli.commands import COMMANDS
from layerprobe.cli.main import main

__all__ = ["COMMANDS", "main"]
