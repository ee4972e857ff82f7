"""County geography: FIPS codes, names, centroids and adjacency (Census 2010/2016 geography)."""

from __future__ import annotations

from functools import cache

import polars as pl

from stopdisparity.resources import data_path


@cache
def county_centroids() -> pl.DataFrame:
    """County FIPS, name, state (2-letter), and the geographic centroid (lat, lng)."""
    return pl.read_csv(
        data_path("geo", "county_centroids.csv"),
        schema={
            "county_fips": pl.String,
            "county_name": pl.String,
            "state": pl.String,
            "lat": pl.Float64,
            "lng": pl.Float64,
        },
    )


@cache
def county_adjacency() -> pl.DataFrame:
    """Ordered pairs of adjacent counties (symmetric, no self-pairs)."""
    return pl.read_csv(
        data_path("geo", "county_adjacency.csv"),
        schema={"county_fips": pl.String, "neighbor_fips": pl.String},
    )
