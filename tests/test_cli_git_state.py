"""git.dirty means tracked changes: what a run writes into the checkout never dirties it."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from layerprobe.provenance import _git_state

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration  # git repos made and read with git


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


def test_untracked_outputs_are_clean_and_tracked_edits_are_dirty(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "train.py").write_text("x = 1\n")
    git(tmp_path, "add", "train.py")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "first")
    commit = git(tmp_path, "rev-parse", "HEAD")
    assert _git_state(tmp_path) == (commit, "false")

    # What a run leaves behind, none of it ignored in this repo: still clean.
    for name in ("mlflow.db", "mlflow.db.lock", "mlflow-pending.jsonl", "outputs/run/x.log", "models/m/ckpt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("written by a run\n")
    assert _git_state(tmp_path) == (commit, "false")

    (tmp_path / "train.py").write_text("x = 2\n")
    assert _git_state(tmp_path) == (commit, "true")


def test_outside_a_checkout_the_state_is_unknown(tmp_path):
    assert _git_state(tmp_path) == ("unknown", "unknown")


def test_the_repo_ignores_what_a_run_writes():
    names = ["mlflow.db", "mlflow.db.lock", "mlflow-pending.jsonl", "outputs/x", "models/x", "mlruns/x"]
    r = subprocess.run(["git", "check-ignore", *names], cwd=ROOT, capture_output=True, text=True)
    assert r.stdout.split() == names
