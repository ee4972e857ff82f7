"""Policy registry (287(g) first), ICE-list import, and TreatmentSpec → treatment timing per county.

A policy file is any CSV in the registry format (DESIGN.md, "Policy registry"); the shipped one is the
287(g) registry ``data/policies/287g_agreements.csv``, whose sources are described in
``287g_agreements.SOURCES.md``. Three steps, one module each:

- :mod:`~stopdisparity.policy.registry`: :func:`load_registry`, :func:`validate_registry`,
  :func:`describe_registry`, :func:`show_agency`, :func:`list_policies`, :func:`write_registry`;
- :mod:`~stopdisparity.policy.ice`: :func:`import_ice_sheet` reads ICE's participating-agencies sheets;
- :mod:`~stopdisparity.policy.treatment`: :class:`TreatmentSpec` and :func:`treatment_timing`.

Everything public is re-exported here; import it from ``stopdisparity.policy``.

References
----------
.. [1] U.S. Immigration and Customs Enforcement, 287(g) participating-agencies sheets (the agreement
   lists the registry and ``first_treated`` are built from). https://www.ice.gov/identify-and-arrest/287g
"""

from __future__ import annotations

from stopdisparity.policy.ice import (
    STATE_NAMES,
    IceImport,
    agency_type_from_name,
    import_ice_sheet,
    model_from_support_type,
)
from stopdisparity.policy.registry import (
    AGENCY_TYPES,
    CONFIDENCE_LEVELS,
    MODELS,
    OPTIONAL_COLUMNS,
    POLICIES,
    REQUIRED_COLUMNS,
    RegistryProblem,
    agency_key,
    describe_registry,
    list_policies,
    load_registry,
    resolve_policy,
    shipped_registry_path,
    show_agency,
    validate_registry,
    write_registry,
)
from stopdisparity.policy.treatment import (
    EXIT_RULES,
    FREQUENCIES,
    KNOWN_MODELS,
    MID_PERIOD_RULES,
    UNKNOWN_MODEL_RULES,
    TimingColumns,
    TreatmentSpec,
    TreatmentTiming,
    make_periods,
    period_index,
    period_start,
    policy_timing_columns,
    treatment_timing,
)

__all__ = [
    "AGENCY_TYPES",
    "CONFIDENCE_LEVELS",
    "EXIT_RULES",
    "FREQUENCIES",
    "KNOWN_MODELS",
    "MID_PERIOD_RULES",
    "MODELS",
    "OPTIONAL_COLUMNS",
    "POLICIES",
    "REQUIRED_COLUMNS",
    "STATE_NAMES",
    "UNKNOWN_MODEL_RULES",
    "IceImport",
    "RegistryProblem",
    "TimingColumns",
    "TreatmentSpec",
    "TreatmentTiming",
    "agency_key",
    "agency_type_from_name",
    "describe_registry",
    "import_ice_sheet",
    "list_policies",
    "load_registry",
    "make_periods",
    "model_from_support_type",
    "period_index",
    "period_start",
    "policy_timing_columns",
    "resolve_policy",
    "shipped_registry_path",
    "show_agency",
    "treatment_timing",
    "validate_registry",
    "write_registry",
]
