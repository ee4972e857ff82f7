"""The analysis sample as an audit log: every exclusion is a named step with counts before and after.

Each step that narrows the sample returns a :class:`SampleStep`; :func:`build_panel` returns the
:class:`SampleLog` beside the panel, reports print it, and the panel's ``.json`` keeps it. Shares are
computed from the explicit ``n_before`` and ``n_after``, never re-derived.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import polars as pl

from stopdisparity.errors import SpecificationError


@dataclass(frozen=True, slots=True)
class SampleStep:
    """One step of the sample: what it kept, why, and the counts before and after it."""

    step: str
    reason: str
    n_before: int
    n_after: int
    unit: str = "stops"
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.n_after > self.n_before or self.n_after < 0:
            raise SpecificationError(
                f"sample step {self.step!r}: n_after must be between 0 and n_before={self.n_before}; "
                f"got {self.n_after}"
            )

    @property
    def n_dropped(self) -> int:
        """Units removed by this step."""
        return self.n_before - self.n_after

    @property
    def share_dropped(self) -> float:
        """Share of the step's input removed by it (0 when the input was empty)."""
        return self.n_dropped / self.n_before if self.n_before else 0.0


@dataclass(frozen=True, slots=True)
class SampleLog:
    """The ordered steps that made a sample."""

    steps: tuple[SampleStep, ...] = ()

    def __iter__(self) -> Iterator[SampleStep]:
        return iter(self.steps)

    def __len__(self) -> int:
        return len(self.steps)

    def add(self, step: SampleStep) -> SampleLog:
        """A new log with ``step`` appended."""
        return SampleLog((*self.steps, step))

    def extend(self, steps: Sequence[SampleStep]) -> SampleLog:
        """A new log with ``steps`` appended."""
        return SampleLog((*self.steps, *steps))

    def to_frame(self) -> pl.DataFrame:
        """One row per step: step, reason, unit, n_before, n_after, n_dropped, share_dropped."""
        return pl.DataFrame(
            [
                {
                    "step": s.step,
                    "reason": s.reason,
                    "unit": s.unit,
                    "n_before": s.n_before,
                    "n_after": s.n_after,
                    "n_dropped": s.n_dropped,
                    "share_dropped": s.share_dropped,
                }
                for s in self.steps
            ],
            schema={
                "step": pl.String,
                "reason": pl.String,
                "unit": pl.String,
                "n_before": pl.Int64,
                "n_after": pl.Int64,
                "n_dropped": pl.Int64,
                "share_dropped": pl.Float64,
            },
        )

    def to_json(self) -> list[dict[str, Any]]:
        """The steps as JSON-ready dictionaries."""
        return [asdict(s) | {"n_dropped": s.n_dropped} for s in self.steps]
