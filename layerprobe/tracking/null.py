"""NullTracker: the run that is not there (tracking.enabled=false). It takes every call Tracker
takes, with the same signature, and does nothing; a name Tracker lacks is an AttributeError here
too. Importing it imports no MLflow."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


class NullTracker:
    """Stands in for Tracker when nothing is tracked: no run, no store, no pending file."""

    uri: None = None
    run_id: None = None
    experiment_id: None = None
    seconds: float = 0.0
    pending: None = None

    def __enter__(self) -> NullTracker:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        return None

    def log_params(self, params: Mapping[str, str]) -> None:
        return None

    def set_tags(self, tags: Mapping[str, str]) -> None:
        return None

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        return None

    def log_metric_records(
        self, records: Sequence[tuple[Mapping[str, float], int]], tags: Mapping[str, str] | None = None
    ) -> None:
        return None

    def log_datasets(self, datasets: Sequence[Mapping[str, Any]]) -> None:
        return None

    def log_artifacts(self, local_dir: str | Path, artifact_path: str | None = None) -> None:
        return None

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        return None

    def log_model(
        self,
        saved_model: str | Path,
        examples: Mapping[str, Any],
        metrics: Mapping[str, float],
        step: int,
        register: str | None = None,
        answers: Mapping[str, Any] | None = None,
    ) -> None:
        return None
