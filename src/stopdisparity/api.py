"""The flat public verbs of stopdisparity, re-exported by the package; the CLI is a thin layer over them.

Each verb takes and returns plain values and polars frames; none prints, plots or caches.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from stopdisparity.ingest import IngestReport, ProgressFn
from stopdisparity.ingest import ingest as _ingest
from stopdisparity.panel import Panel, PanelSpec, build_panel

if TYPE_CHECKING:  # loaded lazily at run time, see _LAZY
    from stopdisparity.models.counts import fit_counts
    from stopdisparity.models.did import fit_did, fit_did_panel
    from stopdisparity.models.event_study import fit_event_study, fit_event_study_panel
    from stopdisparity.models.falsification import falsification_table, falsify
    from stopdisparity.models.sensitivity import honest_bounds, sensitivity
    from stopdisparity.models.staggered import event_coefficients, fit_staggered, fit_staggered_race
from stopdisparity.policy import TreatmentSpec, load_registry, treatment_timing
from stopdisparity.sql import query_frame
from stopdisparity.store import Store, open_store


def ingest(
    paths: list[str | Path] | tuple[str | Path, ...],
    store: str | Path,
    *,
    state: str | None = None,
    memory_limit: str = "2GB",
    threads: int | None = None,
    encoding: str = "utf-8",
    progress: ProgressFn | None = None,
) -> IngestReport:
    """Ingest OPP files into a store; see :func:`stopdisparity.ingest.ingest`.

    ``memory_limit`` is the budget of the whole ingest process (DuckDB's buffer manager gets half).
    """
    return _ingest(
        paths,
        store,
        state=state,
        memory_limit=memory_limit,
        threads=threads,
        encoding=encoding,
        progress=progress,
    )


def load_stops(store: str | Path | Store) -> pl.LazyFrame:
    """The stored stops as a polars LazyFrame (filter and select before ``collect``)."""
    return _store(store).scan()


def load_quarantine(store: str | Path | Store) -> pl.DataFrame:
    """Every quarantined row with its source file, line, column and reason."""
    return _store(store).quarantine()


def stops_by_state_year_race(store: str | Path | Store, *, memory_limit: str = "2GB") -> pl.DataFrame:
    """Stops by state, year and race, aggregated in DuckDB (``count_stops_by_state_year_race.sql``)."""
    con = _store(store).connect(memory_limit=memory_limit)
    try:
        return query_frame(con, "count_stops_by_state_year_race")
    finally:
        con.close()


#: Verbs whose modules import statsmodels: loaded on first use, so that ingest and panel building
#: (and the CLI's start-up) never import the modelling stack.
_LAZY = {
    "fit_did": "stopdisparity.models.did",
    "fit_counts": "stopdisparity.models.counts",
    "falsification_table": "stopdisparity.models.falsification",
    "falsify": "stopdisparity.models.falsification",
    "fit_event_study": "stopdisparity.models.event_study",
    "fit_did_panel": "stopdisparity.models.did",
    "fit_event_study_panel": "stopdisparity.models.event_study",
    "fit_staggered": "stopdisparity.models.staggered",
    "fit_staggered_race": "stopdisparity.models.staggered",
    "event_coefficients": "stopdisparity.models.staggered",
    "sensitivity": "stopdisparity.models.sensitivity",
    "honest_bounds": "stopdisparity.models.sensitivity",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'stopdisparity.api' has no attribute {name!r}")


def _store(store: str | Path | Store) -> Store:
    return store if isinstance(store, Store) else open_store(store)


__all__ = [
    "Panel",
    "PanelSpec",
    "TreatmentSpec",
    "build_panel",
    "event_coefficients",
    "falsification_table",
    "falsify",
    "fit_counts",
    "fit_did",
    "fit_did_panel",
    "fit_event_study",
    "fit_event_study_panel",
    "fit_staggered",
    "fit_staggered_race",
    "honest_bounds",
    "ingest",
    "load_quarantine",
    "load_registry",
    "load_stops",
    "open_store",
    "sensitivity",
    "stops_by_state_year_race",
    "treatment_timing",
]
