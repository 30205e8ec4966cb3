"""Commands as a user types them: printed by the CLI and in log lines, they must run as shown."""

from __future__ import annotations

import sys
from pathlib import Path


def installed_command(name: str) -> str:
    """How to call a console script of this environment so that it runs as printed, activated or
    not: its path beside this Python (`.venv/bin/mlflow` from the checkout), relative when shorter."""
    exe = Path(sys.executable).parent / name
    try:
        rel = exe.relative_to(Path.cwd())
    except ValueError:
        return str(exe)
    return str(rel) if rel.parts[0] != ".." else str(exe)
