"""TensorBoard histogram events from the probe's sketch: one histogram per exposed layer per point.

The buckets are the probe's histogram (`LayerStats.histogram_edges/counts`, re-binned from the
sketch): nothing is recomputed from activations. Written with TensorBoard's own event writer and
protos, so `tensorboard --logdir` shows them in its Histograms and Distributions dashboards.
"""

from __future__ import annotations

import time
from pathlib import Path

from layerprobe.dynamics.points import Dynamics
from layerprobe.probe.accumulate import LayerStats

TAG = "probe/{layer}/activations"


def histogram_proto(s: LayerStats) -> object:
    """HistogramProto of one layer's statistics: bucket i counts values in (limit[i-1], limit[i]]."""
    from tensorboard.compat.proto.summary_pb2 import HistogramProto

    m2 = (s.std**2 + s.mean**2) * s.count  # sum of squares, from the exact mean and std
    return HistogramProto(
        min=s.min,
        max=s.max,
        num=float(s.count),
        sum=s.mean * s.count,
        sum_squares=m2,
        bucket_limit=list(s.histogram_edges[1:]),
        bucket=[float(c) for c in s.histogram_counts],
    )


def write_histograms(dynamics: Dynamics, directory: str | Path) -> Path:
    """One event file in `directory` with every point's histogram per layer; returns `directory`."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    Path(directory).mkdir(parents=True, exist_ok=True)
    writer = EventFileWriter(str(directory), filename_suffix=".dynamics")
    try:
        for p in dynamics.points:
            values = [
                Summary.Value(tag=TAG.format(layer=n), histo=histogram_proto(s))  # type: ignore[arg-type]
                for n, s in p.stats.items()
                if s.count
            ]
            writer.add_event(Event(wall_time=time.time(), step=p.step, summary=Summary(value=values)))
    finally:
        writer.close()
    return Path(directory)
