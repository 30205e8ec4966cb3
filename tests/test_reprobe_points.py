"""A re-probe or a shard merge of the checkpoint a run already probed adds no second point at that
step: the same value to the last bits of double rounding (Chan's merge of shards) is the same point."""

from __future__ import annotations

from layerprobe.reprobe import _not_yet_logged


def test_a_value_equal_but_for_rounding_at_the_same_step_is_not_logged_again():
    known = {"probe/lstm/std": (4, 0.11091091057376103), "probe/lstm/mean": (4, 0.5)}
    merged = {"probe/lstm/std": 0.11091091057376101, "probe/lstm/mean": 0.5}  # 2 shards merged, 1 pass logged
    assert _not_yet_logged(known, merged, 4) == {}


def test_another_value_another_step_or_a_new_metric_is_logged():
    known = {"probe/a/std": (4, 0.25), "probe/b/std": (2, 0.25)}
    new = {"probe/a/std": 0.2500001, "probe/b/std": 0.25, "probe/c/std": 0.25}
    assert _not_yet_logged(known, new, 4) == new
