"""The ledger of probed snapshots (layerprobe.dynamics.ledger): which snapshots of a model_dir a run
still probes. Unit tier: files only, no training."""

from __future__ import annotations

import json

from layerprobe.dynamics import ledger
from layerprobe.engines.base import Checkpoint


def snaps(*steps: int) -> list[Checkpoint]:
    return [Checkpoint(s, f"snapshot-{s}") for s in steps]


def test_a_run_probes_what_no_run_probed_and_a_stopped_run_leaves_its_snapshots(tmp_path):
    ledger.begin(tmp_path, snaps(), trained_to=0)  # a new model_dir
    # a run stopped at step 150 took 0, 50, 100 and probed none; the run that resumes took the rest
    assert ledger.not_yet_probed(snaps(0, 50, 100, 150, 200), tmp_path, 200) == snaps(0, 50, 100, 150, 200)
    ledger.enter(tmp_path, [0, 50, 100, 150, 200], "run-b")
    ledger.begin(tmp_path, snaps(0, 50, 100, 150, 200), trained_to=200)  # begun already: kept as it is
    # a larger budget later: only its own steps; a smaller one: nothing left
    assert ledger.not_yet_probed(snaps(0, 50, 100, 150, 200, 250, 300), tmp_path, 300) == snaps(250, 300)
    assert ledger.not_yet_probed(snaps(0, 50, 100, 150, 200), tmp_path, 100) == []
    ledger.enter(tmp_path, [200, 250], "run-c")  # 200 stays run-b's
    held = json.loads((tmp_path / "dynamics" / "probed.json").read_text())["probed"]
    assert held == {"0": "run-b", "50": "run-b", "100": "run-b", "150": "run-b", "200": "run-b", "250": "run-c"}


def test_a_model_dir_trained_before_the_ledger_counts_its_snapshots_as_probed(tmp_path):
    # runs then probed the snapshots they trained: a rerun probes nothing, a longer budget the new steps
    assert ledger.not_yet_probed(snaps(0, 10, 20), tmp_path, 20) == []
    ledger.begin(tmp_path, snaps(0, 10, 20), trained_to=20)
    assert ledger.probed(tmp_path) == {0: ledger.BEFORE_LEDGER, 10: ledger.BEFORE_LEDGER, 20: ledger.BEFORE_LEDGER}
    assert ledger.not_yet_probed(snaps(0, 10, 20, 30, 40), tmp_path, 40) == snaps(30, 40)
