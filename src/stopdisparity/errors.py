"""Exceptions and warnings of stopdisparity.

Every error derives from :class:`StopDisparityError` and every warning from
:class:`StopDisparityWarning`, so callers can catch the package's problems in one place. Messages say
what was received, what is allowed, and what to do.
"""

from __future__ import annotations

from collections.abc import Iterable


class StopDisparityError(Exception):
    """Base class of every error raised by stopdisparity."""


class SchemaError(StopDisparityError):
    """A table or file does not have the columns, types or values the schema allows."""


class SpecificationError(StopDisparityError, ValueError):
    """An argument or specification is outside what the function accepts."""


class QueryError(StopDisparityError):
    """A query in ``queries/`` failed or was called with the wrong parameters."""


class IngestError(StopDisparityError):
    """An input file cannot be ingested; the store is left unchanged."""


class StoreError(StopDisparityError):
    """A store directory is missing, damaged, locked, or not a stopdisparity store."""


class ReconciliationError(IngestError):
    """rows_read differs from rows_stored + rows_quarantined: rows would be lost."""


class ReferenceDataError(StopDisparityError):
    """A shipped or user-supplied reference table (registry, census, geography) is invalid."""


class SourceNotRegisteredError(StopDisparityError):
    """A named source, policy or scenario is not among the registered ones."""


class StopDisparityWarning(UserWarning):
    """Base class of every warning issued by stopdisparity."""


class DroppedRowsWarning(StopDisparityWarning):
    """Rows were dropped under an explicit ``missing="drop"`` policy."""


class SparseCellWarning(StopDisparityWarning):
    """A reported number rests on very few units or stops."""


class FewClustersWarning(StopDisparityWarning):
    """Few treated clusters, or one dominates: cluster-robust inference is unreliable."""


class FewEffectiveClustersWarning(FewClustersWarning):
    """Enough treated clusters, none dominant, but the effect's information sits in few (G* < 20).

    A :class:`FewClustersWarning` (filters on that catch it too), told apart so that a caller who already
    chose a remedy can silence it while still hearing about very few treated clusters.
    """


class InferenceFallbackWarning(StopDisparityWarning):
    """The default CR2 inference cannot be formed for this fit; CR1 is reported instead (say why)."""


class UnresolvedCountyWarning(StopDisparityWarning):
    """Some county names could not be resolved to FIPS codes (rows kept, FIPS NULL)."""


def check_choice(name: str, value: object, allowed: Iterable[object]) -> None:
    """Raise :class:`SpecificationError` unless ``value`` is one of ``allowed``.

    The message quotes the value received and lists the allowed ones (statsmodels ``string_like``).
    """
    options = list(allowed)
    if value not in options:
        raise SpecificationError(f"{name} must be one of {options!r}; got {value!r}")
