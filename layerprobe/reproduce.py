"""`layerprobe reproduce RUN_ID`: rerun a logged run from its own config and diff the results."""

from __future__ import annotations

import fnmatch
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from layerprobe.config.loaded import Config
from layerprobe.errors import LayerprobeError

log = logging.getLogger(__name__)

ENVIRONMENT_TAGS = ("python.version", "tensorflow.version", "layerprobe.version", "git.commit", "git.dirty")
UNREPRODUCIBLE = ("train/steps_per_sec",)  # wall-clock figures


@dataclass(frozen=True)
class MetricDiff:
    key: str
    original: float
    rerun: float | None

    @property
    def exact(self) -> bool:
        return self.rerun is not None and (self.original == self.rerun or _both_nan(self.original, self.rerun))

    def within(self, rtol: float, atol: float) -> bool:
        if self.rerun is None:
            return False
        return self.exact or math.isclose(self.original, self.rerun, rel_tol=rtol, abs_tol=atol)


def _both_nan(a: float, b: float) -> bool:
    return math.isnan(a) and math.isnan(b)


@dataclass(frozen=True)
class ReproduceReport:
    original_run: str
    new_run: str | None
    diffs: list[MetricDiff]
    rtol: float
    atol: float
    checkpoint: tuple[str, str]  # (logged digest, rerun digest)
    original_checkpoint_now: str | None  # digest of the run's checkpoint today, if its model_dir keeps it
    environment: dict[str, tuple[str, str]] = field(default_factory=dict)  # tag -> (then, now) where differing
    reprobed: tuple[str, ...] = ()  # layers a re-probe added to the run after it ended: not compared

    @property
    def failures(self) -> list[str]:
        out = [f"{d.key}: {d.original!r} -> {d.rerun!r}" for d in self.diffs if not d.within(self.rtol, self.atol)]
        logged, rerun = self.checkpoint
        if self.original_checkpoint_now is not None and self.original_checkpoint_now != logged:
            out.append(
                f"the original checkpoint changed since it was logged ({logged[:12]} -> "
                f"{self.original_checkpoint_now[:12]})"
            )
        if logged and rerun != logged and not self.environment:
            out.append(f"checkpoint differs in the same environment ({logged[:12]} -> {rerun[:12]})")
        return out

    def text(self) -> str:
        exact = sum(d.exact for d in self.diffs)
        close = sum(d.within(self.rtol, self.atol) for d in self.diffs)
        lines = [f"reproduce {self.original_run} -> {self.new_run}"]
        for tag, (then, now) in self.environment.items():
            lines.append(f"warning: environment differs: {tag} was {then!r}, now {now!r}")
        lines.append(
            f"checkpoint: logged {self.checkpoint[0][:16]} rerun {self.checkpoint[1][:16]} "
            f"({'identical' if self.checkpoint[0] == self.checkpoint[1] else 'different'})"
        )
        if self.original_checkpoint_now is None:
            lines.append("not compared: the original checkpoint today (its model_dir no longer keeps it)")
        if self.reprobed:
            lines.append(f"not compared: the layers a re-probe added after the run ({', '.join(self.reprobed)})")
        lines.append(
            f"{len(self.diffs)} metrics: {exact} identical, {close} within rtol={self.rtol:g} "
            f"atol={self.atol:g}, {len(self.diffs) - close} differ"
        )
        width = max([len(d.key) for d in self.diffs] + [6])
        for d in self.diffs:
            if not d.exact:
                mark = "ok" if d.within(self.rtol, self.atol) else "DIFFERS"
                lines.append(f"  {d.key:<{width}}  {d.original:.9g} -> {d.rerun!r:<}  {mark}")
        lines.extend(f"FAIL: {f}" for f in self.failures)
        lines.append("reproduced" if not self.failures else "NOT reproduced")
        return "\n".join(lines)


def reproduce(
    run_id: str,
    output_dir: str | Path,
    uri: str | None = None,
    rtol: float = 0.0,
    atol: float = 0.0,
    allow_imports: bool = False,
) -> ReproduceReport:
    """Rerun `run_id` from its logged config into a new run tagged with the original's id."""
    from layerprobe import runner, tracking
    from layerprobe.config.loaded import load
    from layerprobe.reprobe import load_source, logged_checkpoint, refuse_code

    uri = uri or tracking.resolve_uri(None)
    logged, model_dir, _ = load_source(run_id, uri)
    original_c = load(logged)
    refuse_code(original_c, allow_imports)
    original = tracking.run_data(uri, run_id)
    output_dir = Path(output_dir)
    c = original_c.replace(
        trainer={"model_dir": str(output_dir / "model")},  # trains from scratch
        tracking={"uri": uri, "run_name": f"reproduce {run_id[:8]}", "enabled": True},
    )
    overrides = original.tags.get("layerprobe.overrides", "").split()
    result = runner.run(c, output_dir, overrides, tags={"layerprobe.reproduces": run_id})
    if result.run_id is None:
        raise LayerprobeError("the rerun logged no MLflow run")
    rerun = tracking.run_data(uri, result.run_id)
    # Layers a later `layerprobe probe RUN probe.layers=[...]` added are not part of what the run
    # trained and probed: they are named, not compared.
    probed = [p for p in original.tags.get("layerprobe.exposed", "").split(",") if p]  # older runs: patterns

    def trained(key: str) -> bool:
        return not key.startswith("probe/") or any(fnmatch.fnmatchcase(_layer(key), p) for p in probed)

    keys = sorted(k for k in original.metrics if k.startswith(("eval/", "probe/")) and k not in UNREPRODUCIBLE)
    later = sorted({_layer(k) for k in keys if not trained(k)})
    keys = [k for k in keys if trained(k)]
    diffs = [MetricDiff(k, original.metrics[k], rerun.metrics.get(k)) for k in keys]
    env = {
        t: (original.tags.get(t, ""), rerun.tags.get(t, ""))
        for t in ENVIRONMENT_TAGS
        if original.tags.get(t, "") != rerun.tags.get(t, "")
    }
    now = _digest_now(original_c, model_dir, logged_checkpoint(run_id, uri).step)
    report = ReproduceReport(
        run_id,
        result.run_id,
        diffs,
        rtol,
        atol,
        (original.tags.get("layerprobe.checkpoint_sha256", ""), rerun.tags.get("layerprobe.checkpoint_sha256", "")),
        now,
        env,
        tuple(later),
    )
    diff_file = output_dir / "reproduce_diff.txt"
    diff_file.write_text(report.text() + "\n")
    tracking.Tracker(uri, "", None, run_id=result.run_id).log_artifact(diff_file)
    return report


def _digest_now(c: Config, model_dir: str, step: int | None) -> str | None:
    """The digest today of the checkpoint the run was evaluated at (its step in its model_dir, as
    tampering would leave it); None when the model_dir no longer keeps it."""
    from layerprobe.engines import make_engine
    from layerprobe.engines.spec import model_spec

    if step is None or not Path(model_dir).is_dir():
        return None
    engine = make_engine(model_spec(c), model_dir, c.trainer, c.data)
    found = engine.at_step(step)
    return engine.digest(found) if found else None


def _layer(key: str) -> str:
    """`probe/<layer>/<stat>` -> the layer (a nested model's inner layer holds a `/`)."""
    return key[len("probe/") :].rpartition("/")[0]
