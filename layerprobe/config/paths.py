"""Where the shipped configs and the named experiments live."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = ROOT / "conf"
# Named experiments (the config group `experiments`) and their baselines; tests point it elsewhere.
EXPERIMENTS_DIR = Path(os.environ.get("LAYERPROBE_EXPERIMENTS_DIR") or ROOT / "experiments")
