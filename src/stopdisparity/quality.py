"""Data-quality flags: rows that are valid and stored, but whose values are implausible.

A quarantined row is one the store cannot hold; a *flagged* row is kept, because the value may be
true and dropping it would bias counts, but a reader should know how many there are. The ingest
counts each flag per source in DuckDB (``queries/count_quality_flags.sql``) and records the counts in
the manifest under the source's ``quality``; :func:`quality_table` lists them with their share of the
source's stored rows (``stopdisparity quality --store DIR``).

Flags (the manifest's keys):

- ``search_basis_without_search``: ``search_basis`` given while ``search_conducted`` is not TRUE (OPP
  predicates the basis on the search: ``predicated_columns`` in opp ``lib/standards.R``);
- ``subject_age_outside_10_110``: an age below 10 or above 110 (OPP's own sanity range for ages);
- ``location_outside_state``: ``lat``/``lng`` outside the state's bounding box.

The bounding box comes from the shipped county centroids: each county's centroid is widened by the
distance to its farthest adjacent county's centroid (a county reaches no further than its neighbours'
centres), or by :data:`ISLAND_MARGIN` degrees when it has no neighbour (islands). The box is
therefore conservative: a flagged point is certainly outside the state (swapped or sign-flipped
coordinates, 0/0, another state), while a point in a neighbouring state inside the box is not flagged.

References
----------
Pierson, E. et al. (2020). A large-scale analysis of racial disparities in police stops across the
United States. Nature Human Behaviour 4, 736-745 (column standard and plausibility checks of the
Open Policing Project, stanford-policylab/opp ``lib/standards.R``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, Final

import polars as pl

from stopdisparity.schema import quote_identifier

#: Flag key -> what it means (the manifest's ``quality`` keys, in this order).
FLAGS: Final[Mapping[str, str]] = {
    "search_basis_without_search": "search_basis given while search_conducted is not TRUE",
    "subject_age_outside_10_110": "subject_age below 10 or above 110",
    "location_outside_state": "lat/lng outside the state's bounding box",
}
AGE_RANGE: Final = (10.0, 110.0)
#: Widening (degrees) of a county centroid without neighbours when building a state's box (island
#: counties: Hawaii's Big Island reaches 0.7 degrees from its centroid).
ISLAND_MARGIN: Final = 1.0

#: The columns each flag reads, and their store types (a missing column is a typed NULL).
_QUALITY_COLUMNS: Final[Mapping[str, str]] = {
    "search_basis": "VARCHAR",
    "search_conducted": "BOOLEAN",
    "subject_age": "DOUBLE",
    "lat": "DOUBLE",
    "lng": "DOUBLE",
}


@dataclass(frozen=True, slots=True)
class StateBounds:
    """A state's bounding box in degrees; ``lng_min`` may be below -180 (Alaska's Aleutians)."""

    lat_min: float
    lat_max: float
    lng_min: float
    lng_max: float


@cache
def _all_bounds() -> dict[str, StateBounds]:
    from stopdisparity.geo import county_adjacency, county_centroids

    centroids = county_centroids().select("county_fips", "state", "lat", "lng")
    neighbours = centroids.select(
        pl.col("county_fips").alias("neighbor_fips"),
        pl.col("lat").alias("n_lat"),
        pl.col("lng").alias("n_lng"),
    )
    reach = (
        county_adjacency()
        .join(centroids, on="county_fips")
        .join(neighbours, on="neighbor_fips")
        .group_by("county_fips")
        .agg(
            (pl.col("n_lat") - pl.col("lat")).abs().max().alias("d_lat"),
            (pl.col("n_lng") - pl.col("lng")).abs().max().alias("d_lng"),
        )
    )
    boxes = (
        centroids.join(reach, on="county_fips", how="left")
        .with_columns(
            pl.col("d_lat", "d_lng").fill_null(ISLAND_MARGIN),
        )
        .group_by("state")
        .agg(
            (pl.col("lat") - pl.col("d_lat")).min().alias("lat_min"),
            (pl.col("lat") + pl.col("d_lat")).max().alias("lat_max"),
            (pl.col("lng") - pl.col("d_lng")).min().alias("lng_min"),
            (pl.col("lng") + pl.col("d_lng")).max().alias("lng_max"),
        )
    )
    return {
        row["state"]: StateBounds(
            max(row["lat_min"], -90.0), min(row["lat_max"], 90.0), row["lng_min"], row["lng_max"]
        )
        for row in boxes.iter_rows(named=True)
    }


def state_bounds(state: str) -> StateBounds | None:
    """The bounding box of a state (two-letter code), or None for a state without shipped counties."""
    return _all_bounds().get(state.upper())


def quality_inputs(columns: Collection[str], state: str) -> tuple[dict[str, Any], dict[str, str]]:
    """Parameters and the ``quality_columns`` fragment of ``count_quality_flags.sql`` for one source.

    Parameters
    ----------
    columns
        The source's column names (those on the schema's allow-list; absent ones become typed NULLs).
    state
        The source's state, for the bounding box of ``location_outside_state``.

    Returns
    -------
    tuple
        (named parameters, fragments without ``table``).
    """
    present = set(columns)
    select = [
        f"c.{quote_identifier(name)} AS {name}" if name in present else f"CAST(NULL AS {kind}) AS {name}"
        for name, kind in _QUALITY_COLUMNS.items()
    ]
    bounds = state_bounds(state)
    box = bounds or StateBounds(0.0, 0.0, 0.0, 0.0)
    params: dict[str, Any] = {
        "has_search_basis": "search_basis" in present,
        "has_age": "subject_age" in present,
        "has_location": bounds is not None and bool({"lat", "lng"} & present),
        "age_min": AGE_RANGE[0],
        "age_max": AGE_RANGE[1],
        "lat_min": box.lat_min,
        "lat_max": box.lat_max,
        "lng_min": box.lng_min,
        "lng_max": box.lng_max,
    }
    return params, {"quality_columns": ",\n        ".join(select)}


def quality_table(manifest: Mapping[str, Any]) -> pl.DataFrame:
    """One row per source and flag: the count and its share of the source's stored rows.

    Parameters
    ----------
    manifest
        A store's manifest (:meth:`stopdisparity.store.Store.manifest`).

    Returns
    -------
    polars.DataFrame
        Columns ``source, flag, rows_flagged, rows_stored, share`` (share = rows_flagged /
        rows_stored). ``rows_flagged`` and ``share`` are null when the source lacks the flag's columns
        or was ingested before flags were counted; ``share`` is NaN for a source with no stored rows.
    """
    rows: list[dict[str, Any]] = []
    for name, entry in manifest["sources"].items():
        counts = entry.get("quality") or {}
        stored = int(entry["rows_stored"])
        for flag in FLAGS:
            n = counts.get(flag)
            share = None if n is None else (n / stored if stored else float("nan"))
            rows.append(
                {"source": name, "flag": flag, "rows_flagged": n, "rows_stored": stored, "share": share}
            )
    return pl.DataFrame(
        rows,
        schema={
            "source": pl.String,
            "flag": pl.String,
            "rows_flagged": pl.Int64,
            "rows_stored": pl.Int64,
            "share": pl.Float64,
        },
    )


__all__ = ["AGE_RANGE", "FLAGS", "StateBounds", "quality_inputs", "quality_table", "state_bounds"]
