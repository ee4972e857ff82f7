"""stopdisparity: racial disparities in police traffic stops, before and after a policy such as 287(g).

The flat public API (:mod:`stopdisparity.api`) is re-exported here.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("stopdisparity")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

from stopdisparity.api import (
    Panel,
    PanelSpec,
    TreatmentSpec,
    build_panel,
    ingest,
    load_quarantine,
    load_registry,
    load_stops,
    open_store,
    stops_by_state_year_race,
    treatment_timing,
)

__all__ = [
    "Panel",
    "PanelSpec",
    "TreatmentSpec",
    "__version__",
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


def __getattr__(name: str) -> object:
    """Load the modelling verbs (which import statsmodels) on first use."""
    from stopdisparity import api

    if name in api._LAZY:
        return getattr(api, name)
    raise AttributeError(f"module 'stopdisparity' has no attribute {name!r}")
