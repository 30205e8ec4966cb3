"""Tracking cost: the share of the default run's wall time spent in MLflow, with a sqlite store."""

from __future__ import annotations

import functools
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from benchmarks.configs import default_config
from benchmarks.measure import Goal, Section, fmt, median, say, spread


@contextmanager
def client_timer() -> Iterator[dict[str, float]]:
    """Times every public MlflowClient method (construction included), outermost calls only."""
    from mlflow.tracking import MlflowClient

    total = {"seconds": 0.0, "calls": 0}
    depth = [0]
    saved: dict[str, Any] = {}

    def wrap(fn: Any) -> Any:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            depth[0] += 1
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                depth[0] -= 1
                if depth[0] == 0:
                    total["seconds"] += time.perf_counter() - t
                    total["calls"] += 1

        return inner

    for name, fn in list(vars(MlflowClient).items()):
        if callable(fn) and (name == "__init__" or not name.startswith("_")):
            saved[name] = fn
            setattr(MlflowClient, name, wrap(fn))
    try:
        yield total
    finally:
        for name, fn in saved.items():
            setattr(MlflowClient, name, fn)


def tracking_cost(quick: bool, repeats: int) -> Section:
    from layerprobe.runner import run

    t = time.perf_counter()
    import mlflow  # noqa: F401  (paid once per CLI process; timed apart from the runs)

    import_seconds = time.perf_counter() - t
    shares, client_shares, totals, mlflow_s = [], [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        t = time.perf_counter()
        from mlflow.tracking import MlflowClient

        MlflowClient(tracking_uri=uri).search_experiments()  # creates the store: schema migrations
        create_seconds = time.perf_counter() - t
        say(f"  import mlflow {import_seconds:.2f} s; new sqlite store {create_seconds:.2f} s (once)")
        for r in range(repeats):
            c = default_config(str(Path(tmp) / f"model{r}"), uri, quick=quick)
            with client_timer() as client:
                t = time.perf_counter()
                result = run(c, Path(tmp) / f"out{r}")
                total = time.perf_counter() - t
            totals.append(total)
            mlflow_s.append(result.seconds["mlflow"])
            shares.append(100 * result.seconds["mlflow"] / total)
            client_shares.append(100 * client["seconds"] / total)
            say(
                f"  default run {total:.1f} s: RunResult.seconds['mlflow'] {result.seconds['mlflow']:.3f} s "
                f"({shares[-1]:.2f}%); all MlflowClient calls {client['seconds']:.3f} s ({client_shares[-1]:.2f}%)"
            )
    steps = c["trainer"]["train_steps"]
    cli_share = (
        100 * (import_seconds + median(client_shares) / 100 * median(totals)) / (median(totals) + import_seconds)
    )
    return Section(
        "tracking",
        "4. Tracking cost",
        f"`runner.run` of the default experiment ({steps} training steps, evaluation, probe with plots) logging "
        "to a sqlite store in a temporary directory, each repeat from a fresh model_dir into the same store "
        "(created beforehand, so its one-off schema migration is reported apart). The goal figure is "
        "`RunResult.seconds['mlflow']` (the Tracker's timed logging calls) over the run's wall time. As a "
        "cross-check every public `MlflowClient` method, construction included, was wrapped with a timer "
        "(outermost calls only), which also catches run creation and termination.",
        ["", "value"],
        [
            ["default run wall time", spread(totals, " s")],
            ["RunResult.seconds['mlflow']", spread(mlflow_s, " s")],
            ["share: seconds['mlflow'] / run wall time", spread(shares, " %")],
            ["share: all MlflowClient calls / run wall time", spread(client_shares, " %")],
            ["`import mlflow` (once per process; outside the runs above)", f"{fmt(import_seconds)} s"],
            ["new sqlite store, schema migrations (once per store)", f"{fmt(create_seconds)} s"],
            ["share for a fresh CLI process on an existing store (import + all client calls)", f"{fmt(cli_share)} %"],
        ],
        [Goal("MLflow share of the default run's wall time", median(shares), "<=", 2.0, " %")],
        data={"import": import_seconds},
    )
