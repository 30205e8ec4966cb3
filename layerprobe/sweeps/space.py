"""A search space in Hydra's override grammar: `choice(8,16)`, `8,16`, `range(1,5)`,
`interval(0.001,0.1)`, `tag(log, interval(...))`; everything else is a fixed value.

`Dimension` is plain data (no Optuna import), so the CLI can check every value and bound against
the schema before a sweep starts; `distribution()` makes the Optuna object the sampler draws from.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from layerprobe.errors import LayerprobeError


@dataclass(frozen=True)
class Dimension:
    """One searched key: a categorical `choices`, or a numeric range [low, high] (int or float;
    `step` for range(); `log` for tag(log, ...))."""

    key: str
    override: str  # as given, for error messages
    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    integer: bool = False

    def values_to_check(self) -> list[Any]:
        """The values the schema must accept: every choice, else both bounds."""
        if self.choices is not None:
            return list(self.choices)
        return [self.low, self.high]

    def suggest(self, trial: Any) -> Any:
        """This key's value for an Optuna trial (ask-and-tell)."""
        if self.choices is not None:
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.integer:
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)  # type: ignore[arg-type]
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)  # type: ignore[arg-type]

    def distribution(self) -> Any:
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.choices is not None:
            return CategoricalDistribution(self.choices)
        if self.integer:
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))  # type: ignore[arg-type]
        return FloatDistribution(self.low, self.high, log=self.log, step=self.step)  # type: ignore[arg-type]

    def distribution_json(self) -> dict[str, Any]:
        from optuna.distributions import distribution_to_json

        return json.loads(distribution_to_json(self.distribution()))


@dataclass(frozen=True)
class Space:
    dimensions: dict[str, Dimension]  # searched keys, in order
    fixed: dict[str, str]  # key -> value (as an override string) for every job

    def signature(self) -> dict[str, Any]:
        """What a study records about its space, to refuse a rerun that searches another one."""
        return {k: d.distribution_json() for k, d in self.dimensions.items()}


def parse_space(params: Mapping[str, Any] | None, arguments: Sequence[str]) -> Space:
    """`hydra.sweeper.params` (key -> override value) and the command line's task overrides; a key on
    the command line wins over the same key in params."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    lines = [f"{k}={v}" for k, v in (params or {}).items()] + list(arguments)
    dims: dict[str, Dimension] = {}
    fixed: dict[str, str] = {}
    for line, o in zip(lines, OverridesParser.create().parse_overrides(lines)):
        key = o.get_key_element()
        dims.pop(key, None)
        fixed.pop(key, None)
        if o.is_sweep_override():
            dims[key] = _dimension(key, line, o)
        else:
            fixed[key] = o.get_value_element_as_str()
    return Space(dims, fixed)


def _dimension(key: str, line: str, o: Any) -> Dimension:
    from hydra.core.override_parser.types import Transformer

    if o.is_choice_sweep() or (o.is_range_sweep() and o.value().shuffle):
        return Dimension(key, line, choices=tuple(o.sweep_iterator(transformer=Transformer.encode)))
    v = o.value()
    if o.is_range_sweep():  # range(start, stop, step): stop excluded, as in Python
        integer = all(isinstance(x, int) for x in (v.start, v.stop, v.step))
        last = v.start + ((v.stop - v.start - (1 if integer else 1e-12)) // v.step) * v.step
        if last < v.start:
            raise LayerprobeError(f"{line}: range() is empty; give start < stop")
        return Dimension(key, line, low=v.start, high=last, step=v.step, integer=integer)
    if o.is_interval_sweep():
        if v.start >= v.end:
            raise LayerprobeError(f"{line}: interval(low, high) needs low < high")
        log = "log" in v.tags
        if log and v.start <= 0:
            raise LayerprobeError(f"{line}: tag(log, interval(low, high)) needs low > 0")
        integer = isinstance(v.start, int) and isinstance(v.end, int)
        return Dimension(key, line, low=v.start, high=v.end, log=log, integer=integer)
    raise LayerprobeError(f"{line}: the Optuna sweeper reads choice(), a,b,c, range() or interval()")
