"""Analysis panels: county × period × race stop counts with treatment timing, population and a sample log.

The store is aggregated in DuckDB (``queries/select_panel_stops.sql``,
``aggregate_stops_by_county_period_race.sql``); only cells come back to Python. Treatment timing comes
from policy files through a :class:`~stopdisparity.policy.TreatmentSpec`, population from
:mod:`stopdisparity.census`, neighbours from the shipped county adjacency.

Designs
-------
``spillover`` (default; Pham & Van 2022): the stops are one agency's (e.g. the state patrol's) and a
county is treated when any *other* agency's agreement is in force there — the stopping agency's own
agreements are excluded. ``direct``: only the stopping agency's own agreements count; this estimand
is more confounded (the signing agency chose to sign) and is reported as a different one.

References
----------
Pham, H. & Van, P. H. (2022). Sheriffs, State Troopers, and the Spillover Effects of Immigration
Policing. 64 Arizona Law Review 463.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import polars as pl

from stopdisparity import __version__
from stopdisparity.errors import SpecificationError, check_choice
from stopdisparity.periods import periods_range
from stopdisparity.sample import SampleLog, SampleStep
from stopdisparity.schema import CANONICAL_COLUMNS, quote_identifier
from stopdisparity.sql import load_query, query_frame
from stopdisparity.store import Store, open_store

Period = Literal["month", "quarter", "year"]
Design = Literal["spillover", "direct"]
PERIODS: tuple[Period, ...] = ("month", "quarter", "year")
DESIGNS: tuple[Design, ...] = ("spillover", "direct")
#: Stop-level columns that may split cells (``by=``): categorical canonical columns.
BY_COLUMNS = tuple(n for n, k in CANONICAL_COLUMNS.items() if k in ("enum", "boolean", "string"))
#: The derived boolean column that splits cells when ``PanelSpec.reason_category`` is given: TRUE when
#: the stop's ``reason_for_stop`` is one of the category's values, FALSE when it is another value, NULL
#: when the reason is missing.
REASON_CATEGORY_COLUMN = "in_reason_category"


@dataclass(frozen=True, kw_only=True, slots=True)
class PanelSpec:
    """What goes into a panel: which stops, at what period, by what, and the eligibility rules.

    Eligibility for DiD is decided per county from pre-period data only and is off by default
    (``min_pre_stops=None``, ``max_pre_unknown_share=None``).

    ``reasons`` *filters* stops by ``reason_for_stop``; ``reason_category`` instead *splits* cells by
    a derived boolean column, :data:`REASON_CATEGORY_COLUMN` (``in_reason_category``): is the stop's
    ``reason_for_stop`` one of these values (NULL when the reason is missing)? The values are bound as
    a query parameter, never written into the SQL text. ``split_columns`` is ``by`` plus that column.
    """

    states: tuple[str, ...] = ()
    agencies: tuple[str, ...] = ()
    years: tuple[int, int] | None = None
    stop_types: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    period: Period = "month"
    design: Design = "spillover"
    by: tuple[str, ...] = ()
    reason_category: tuple[str, ...] = ()
    min_pre_stops: int | None = None
    max_pre_unknown_share: float | None = None
    population: Literal["none", "nearest", "carry_2010_shares"] = "none"

    def __post_init__(self) -> None:
        check_choice("period", self.period, PERIODS)
        check_choice("design", self.design, DESIGNS)
        object.__setattr__(self, "states", tuple(s.upper() for s in self.states))
        for name in ("agencies", "stop_types", "reasons", "by", "reason_category"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = (value,)
            object.__setattr__(self, name, tuple(value))
        for col in self.by:
            if col not in BY_COLUMNS:
                raise SpecificationError(
                    f"by must name stop-level columns among {list(BY_COLUMNS)}; got {col!r}"
                )
        _check_reason_category(self.reason_category)
        if self.years is not None:
            lo, hi = self.years
            if lo > hi:
                raise SpecificationError(
                    f"years must be (first, last) with first <= last; got {self.years!r}"
                )
        if self.design == "direct" and not self.agencies:
            raise SpecificationError(
                "design='direct' needs the stopping agency (agencies=...): "
                "its own agreements define treatment"
            )
        if self.min_pre_stops is not None and self.min_pre_stops < 0:
            raise SpecificationError(f"min_pre_stops must be >= 0 or None; got {self.min_pre_stops!r}")
        share = self.max_pre_unknown_share
        if share is not None and not 0 <= share <= 1:
            raise SpecificationError(f"max_pre_unknown_share must be in [0, 1] or None; got {share!r}")
        check_choice("population", self.population, ("none", "nearest", "carry_2010_shares"))

    @property
    def split_columns(self) -> tuple[str, ...]:
        """The columns that split cells beyond race: ``by``, then ``in_reason_category`` if requested."""
        return (*self.by, REASON_CATEGORY_COLUMN) if self.reason_category else self.by


def _check_reason_category(values: tuple[str, ...]) -> None:
    """Raise :class:`SpecificationError` unless ``values`` are distinct, non-blank strings."""
    bad = [v for v in values if not isinstance(v, str) or not v.strip()]
    if bad:
        raise SpecificationError(
            f"reason_category must hold non-blank reason_for_stop values (strings); got {bad!r}"
        )
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise SpecificationError(f"reason_category lists {repeated!r} more than once")


@dataclass(frozen=True, slots=True)
class Panel:
    """A county × period × race panel (``frame``), its sample log and its lineage.

    Frame columns (DESIGN.md): county_fips, state, period (consecutive integer: year·12+month−1,
    year·4+quarter−1, or year), period_start, race, stops, population, in_force, first_treated (0 =
    never treated), rel_period (NULL if never treated), then hispanic_share, neighbor_in_force, the
    ``by`` columns (then ``in_reason_category`` with ``PanelSpec.reason_category``), and one timing
    set per extra policy.
    """

    frame: pl.DataFrame
    sample_log: SampleLog
    lineage: Mapping[str, Any]
    treatment_rows: pl.DataFrame = field(default_factory=pl.DataFrame)

    def write(self, path: str | Path) -> Path:
        """Write the frame as Parquet (lineage in its key-value metadata) and the log + lineage as JSON."""
        out = Path(path)
        if out.suffix.lower() not in (".parquet", ".csv"):
            raise SpecificationError(f"panel output must end in .parquet or .csv; got {out.name!r}")
        out.parent.mkdir(parents=True, exist_ok=True)
        meta = self.to_json()
        tmp = out.with_name(f".{out.name}.tmp")
        if out.suffix.lower() == ".parquet":
            self.frame.write_parquet(
                tmp, metadata={"stopdisparity": json.dumps(meta["lineage"], default=str)}
            )
        else:
            self.frame.write_csv(tmp)
        tmp.replace(out)
        side = out.with_suffix(".json")
        side.write_text(json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8")
        return out

    def to_json(self) -> dict[str, Any]:
        """Sample log, lineage and the treatment rows used, as JSON-ready data."""
        return {
            "sample_log": self.sample_log.to_json(),
            "lineage": dict(self.lineage),
            "treatment_rows": self.treatment_rows.to_dicts() if self.treatment_rows.height else [],
        }


# -------------------------------------------------------------------------------------- the build
def _filter_params(spec: PanelSpec) -> dict[str, Any]:
    lo, hi = spec.years if spec.years is not None else (None, None)
    params: dict[str, Any] = {
        "states": list(spec.states),
        "year_min": lo,
        "year_max": hi,
        "agencies": list(spec.agencies),
        "stop_types": list(spec.stop_types),
        "reasons": list(spec.reasons),
    }
    if spec.reason_category:  # bound only when by_columns_sql uses it
        params["reason_category"] = list(spec.reason_category)
    return params


def by_columns_sql(spec: PanelSpec) -> str:
    """The ``by_columns`` fragment of ``select_panel_stops.sql`` (a pure SQL builder).

    Allow-listed ``by`` identifiers, then, with ``reason_category``, the derived boolean
    ``in_reason_category`` computed from the bound ``$reason_category`` list (NULL for a missing
    reason, so such stops are counted apart rather than as "not in the category").
    """
    by = "".join(f"{quote_identifier(c)}, " for c in spec.by)
    if spec.reason_category:
        by += (
            "CASE WHEN reason_for_stop IS NULL THEN NULL "
            "ELSE list_contains($reason_category, reason_for_stop) END "
            f"AS {quote_identifier(REASON_CATEGORY_COLUMN)}, "
        )
    return by


def _filtered_sql(spec: PanelSpec) -> str:
    return load_query("select_panel_stops").render({"by_columns": by_columns_sql(spec)})


def sample_steps(counts: Mapping[str, int], spec: PanelSpec) -> list[SampleStep]:
    """Sample-log steps from the one-scan counts of ``count_panel_sample_steps.sql``."""
    order = [
        ("states", "stops in the requested states", counts["all_stops"], counts["in_states"],
         {"states": list(spec.states) or "all"}),
        ("date_window", "stops with a date inside the requested years", counts["in_states"],
         counts["in_date_window"], {"years": list(spec.years) if spec.years else "all"}),
        ("agency", "stops by the requested agencies (department_name)", counts["in_date_window"],
         counts["of_agency"], {"agencies": list(spec.agencies) or "all"}),
        ("stop_type", "stops of the requested types", counts["of_agency"], counts["of_stop_type"],
         {"stop_types": list(spec.stop_types) or "all"}),
        ("reason_for_stop", "stops with the requested reasons", counts["of_stop_type"], counts["of_reason"],
         {"reasons": list(spec.reasons) or "all"}),
        ("county_known", "stops whose county resolved to a FIPS code (others cannot be placed)",
         counts["of_reason"], counts["with_county"], {}),
    ]  # fmt: skip
    return [
        SampleStep(step, reason, int(b), int(a), "stops", details) for step, reason, b, a, details in order
    ]


def _balanced(cells: pl.DataFrame, spec: PanelSpec, counties: pl.DataFrame) -> pl.DataFrame:
    """Every county of the panel's states × every period of its state's range × every race (× by)."""
    ranges = cells.group_by("state").agg(
        pl.col("period").min().alias("first"), pl.col("period").max().alias("last")
    )
    grids = []
    for row in ranges.iter_rows(named=True):
        periods = periods_range(row["first"], row["last"], spec.period).select("period", "period_start")
        units = counties.filter(pl.col("state") == row["state"]).select("county_fips", "state")
        grids.append(units.join(periods, how="cross"))
    grid = (
        pl.concat(grids)
        if grids
        else pl.DataFrame(
            schema={"county_fips": pl.String, "state": pl.String, "period": pl.Int64, "period_start": pl.Date}
        )
    )
    keys = cells.select("race", *spec.split_columns).unique().sort(pl.all())
    grid = grid.join(keys, how="cross")
    out = grid.join(
        cells,
        on=["county_fips", "state", "period", "race", *spec.split_columns],
        how="left",
        nulls_equal=True,
    )
    return out.with_columns(pl.col("stops").fill_null(0))


def build_panel(
    store: str | Path | Store,
    spec: PanelSpec | None = None,
    *,
    policy: str | Path = "287g",
    treatment: Any = None,
    extra_policies: Mapping[str, tuple[str | Path, Any]] | None = None,
    memory_limit: str = "2GB",
) -> Panel:
    """Aggregate a store into a county × period × race panel with treatment timing.

    Parameters
    ----------
    store
        A store directory or :class:`~stopdisparity.store.Store`.
    spec
        Filters, period, design, ``by`` columns, eligibility (default: :class:`PanelSpec()`).
    policy
        ``"287g"`` (the shipped registry) or the path of a policy CSV in the registry format.
    treatment
        A :class:`~stopdisparity.policy.TreatmentSpec` (default: its documented defaults). The design
        adds the agency filter: spillover excludes the stopping agencies' own agreements, direct keeps
        only them.
    extra_policies
        ``{name: (policy, TreatmentSpec)}``: more policies, each adding its own timing columns.
    memory_limit
        DuckDB's memory limit for the aggregation.

    Returns
    -------
    Panel
    """
    from stopdisparity import census, geo
    from stopdisparity import policy as policy_mod

    spec = spec or PanelSpec()
    st = store if isinstance(store, Store) else open_store(store)
    params = _filter_params(spec)
    filtered = _filtered_sql(spec)
    con = st.connect(memory_limit=memory_limit)
    try:
        total = int(query_frame(con, "count_stops")["stops"][0])
        counts = query_frame(con, "count_panel_sample_steps", params, fragments={"filtered": filtered}).row(
            0, named=True
        )
        by_keys = "".join(f"{quote_identifier(c)}, " for c in spec.split_columns)
        cells = query_frame(
            con,
            "aggregate_stops_by_county_period_race",
            params | {"period": spec.period},
            fragments={"filtered": filtered, "by_keys": by_keys},
        )
    finally:
        con.close()
    log = SampleLog().extend(sample_steps({"all_stops": total, **counts}, spec))
    if cells.height == 0:
        raise SpecificationError(
            "no stops are left after the filters; see the sample log: "
            + "; ".join(f"{s.step}: {s.n_before:,} -> {s.n_after:,}" for s in log)
        )
    states = sorted(cells["state"].unique().to_list())
    counties = geo.county_centroids().filter(pl.col("state").is_in(states)).select("county_fips", "state")
    panel = _balanced(cells, spec, counties)

    # treatment timing: one set of columns per policy (the main one unnamed); timing is computed for
    # the panel's counties and their neighbours (across state lines) for neighbor_in_force
    adjacency = _adjacency()
    fips = sorted(panel["county_fips"].unique().to_list())
    neighbours = adjacency.filter(pl.col("county_fips").is_in(fips))["neighbor_fips"].unique().to_list()
    first, last = int(panel["period"].min()), int(panel["period"].max())  # type: ignore[arg-type]
    window = periods_range(first, last, spec.period)
    policies: dict[str, tuple[str | Path, Any]] = {"": (policy, treatment)}
    policies.update(extra_policies or {})
    rows_used, timing_lineage, main_frame = [], {}, None
    for name, (pol, tsp) in policies.items():
        path = policy_mod.resolve_policy(pol)
        tspec = _design_spec(tsp, spec, policy_mod)
        registry = policy_mod.load_registry(path)
        timing = policy_mod.treatment_timing(registry, tspec, window, counties=sorted({*fips, *neighbours}))
        if name == "":
            main_frame = timing.frame
        frame = timing.named(name or None) if name else timing.frame
        panel = panel.join(frame, on=["county_fips", "period"], how="left")
        panel, log = _exclude_unknown_model(panel, log, timing.excluded, name)
        rows_used.append(timing.rows_used.with_columns(pl.lit(name or str(pol)).alias("policy")))
        timing_lineage[name or "main"] = {
            "policy": str(pol),
            "path": str(path),
            "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest(),
            "treatment_spec": _spec_json(tspec),
            "notes": list(timing.notes),
            "treated_summary": timing.summary.to_dicts(),
        }
    assert main_frame is not None
    if bool(panel["censored"].any()):  # exit="censor" (main policy): periods after the first switch-off
        before = panel.height
        panel = panel.filter(~pl.col("censored"))
        reason = "county-periods after an agreement ended (exit='censor')"
        log = log.add(SampleStep("censor_after_exit", reason, before, panel.height, "cells"))

    # neighbours: is an adjacent county (in any state) treated in this period?
    treated_now = main_frame.select(pl.col("county_fips").alias("neighbor_fips"), "period", "in_force")
    neighbor = (
        adjacency.join(treated_now, on="neighbor_fips")
        .group_by("county_fips", "period")
        .agg(pl.col("in_force").any().alias("neighbor_in_force"))
    )
    panel = panel.join(neighbor, on=["county_fips", "period"], how="left").with_columns(
        pl.col("neighbor_in_force").fill_null(False)
    )

    # population by year of the period start, and the county's Hispanic share as a covariate
    panel = panel.with_columns(pl.col("period_start").dt.year().alias("_year"))
    years = sorted(panel["_year"].unique().to_list())
    pop = census.population(fips, years, approximate=spec.population).select(
        "county_fips",
        pl.col("year").alias("_year"),
        "race",
        "population",
        pl.col("basis").alias("population_basis"),
    )
    share = census.hispanic_share(fips, years, approximate=spec.population).select(
        "county_fips", pl.col("year").alias("_year"), "hispanic_share"
    )
    panel = (
        panel.join(pop, on=["county_fips", "_year", "race"], how="left")
        .join(share, on=["county_fips", "_year"], how="left")
        .drop("_year")
    )

    # eligibility (off by default), decided from pre-period data only
    panel, steps = _eligibility(panel, spec)
    log = log.extend(steps)

    lead = ["county_fips", "state", "period", "period_start", "race", "stops", "population", "in_force",
            "first_treated", "rel_period"]  # fmt: skip
    rest = [c for c in panel.columns if c not in lead]
    panel = panel.select(*lead, *rest).sort("state", "county_fips", "period", "race", *spec.split_columns)
    lineage = {
        "package_version": __version__,
        "store": str(st.root),
        "inputs": {
            name: {
                k: entry.get(k) for k in ("sha256", "rows_read", "rows_stored", "rows_quarantined", "state")
            }
            for name, entry in st.manifest()["sources"].items()
        },
        "panel_spec": _spec_json(spec),
        "policies": timing_lineage,
        "population_approximation": spec.population,
        "queries": {q: _sql_digest(q) for q in PANEL_QUERIES},
        "versions": _versions(),
    }
    return Panel(
        panel, log, lineage, pl.concat(rows_used, how="diagonal_relaxed") if rows_used else pl.DataFrame()
    )


PANEL_QUERIES = (
    "count_stops",
    "select_panel_stops",
    "count_panel_sample_steps",
    "aggregate_stops_by_county_period_race",
)


def _sql_digest(name: str) -> str:
    """First 12 hex digits of the SHA-256 of a query's text: which SQL made the panel."""
    return hashlib.sha256(load_query(name).text.encode()).hexdigest()[:12]


def _spec_json(spec: Any) -> dict[str, Any]:
    import dataclasses

    return {f.name: getattr(spec, f.name) for f in dataclasses.fields(spec)}


def _versions() -> dict[str, str]:
    import duckdb

    return {"stopdisparity": __version__, "duckdb": duckdb.__version__, "polars": pl.__version__}


def _adjacency() -> pl.DataFrame:
    """County adjacency in the centroids' (2016) county codes, without self-pairs."""
    from stopdisparity import geo

    return (
        geo.county_adjacency()
        .with_columns(
            pl.col("county_fips").map_elements(geo.canonical_fips, return_dtype=pl.String),
            pl.col("neighbor_fips").map_elements(geo.canonical_fips, return_dtype=pl.String),
        )
        .filter(pl.col("county_fips") != pl.col("neighbor_fips"))
        .unique()
    )


def _exclude_unknown_model(
    panel: pl.DataFrame, log: SampleLog, excluded: pl.DataFrame, policy_name: str
) -> tuple[pl.DataFrame, SampleLog]:
    """Drop counties a policy excluded (``unknown_model='exclude_county'``), as a logged step."""
    gone = sorted(set(excluded["county_fips"].to_list()) & set(panel["county_fips"].unique().to_list()))
    if not gone:
        return panel, log
    before = panel["county_fips"].n_unique()
    panel = panel.filter(~pl.col("county_fips").is_in(gone))
    step = "exclude_unknown_model" + (f"__{policy_name}" if policy_name else "")
    reason = "counties whose agreement has an unknown model (unknown_model='exclude_county')"
    after = panel["county_fips"].n_unique()
    return panel, log.add(SampleStep(step, reason, before, after, "counties", {"counties": gone}))


def _design_spec(treatment: Any, spec: PanelSpec, policy_mod: Any) -> Any:
    """The TreatmentSpec with the design's agency rule applied."""
    import dataclasses

    tspec = treatment if treatment is not None else policy_mod.TreatmentSpec()
    if not isinstance(tspec, policy_mod.TreatmentSpec):
        raise SpecificationError(f"treatment must be a TreatmentSpec; got {type(tspec).__name__}")
    if not spec.agencies:
        return tspec
    if spec.design == "spillover":
        return dataclasses.replace(tspec, exclude_agencies=(*tspec.exclude_agencies, *spec.agencies))
    return dataclasses.replace(tspec, only_agencies=spec.agencies)


def _eligibility(panel: pl.DataFrame, spec: PanelSpec) -> tuple[pl.DataFrame, list[SampleStep]]:
    """Drop counties that fail the pre-period rules (never-treated counties: all their periods count)."""
    steps: list[SampleStep] = []
    if spec.min_pre_stops is None and spec.max_pre_unknown_share is None:
        return panel, steps
    pre = panel.filter((pl.col("first_treated") == 0) | (pl.col("period") < pl.col("first_treated")))
    unknown = pl.col("race").is_in(["unknown", "other/unknown", "NA"])
    pre_counts = pre.group_by("county_fips").agg(
        pl.col("stops").sum().alias("pre_stops"),
        pl.col("stops").filter(unknown).sum().alias("pre_unknown"),
    )
    # every county, with zeros where it has no pre-period (treated before the panel starts)
    per_county = (
        panel.select("county_fips")
        .unique()
        .join(pre_counts, on="county_fips", how="left")
        .with_columns(pl.col("pre_stops", "pre_unknown").fill_null(0))
    )
    keep = panel.select("county_fips").unique()
    if spec.min_pre_stops is not None:
        ok = per_county.filter(pl.col("pre_stops") >= spec.min_pre_stops).select("county_fips")
        before = keep.height
        keep = keep.join(ok, on="county_fips", how="semi")
        reason = f"counties with at least {spec.min_pre_stops} stops before adoption"
        details = {"min_pre_stops": spec.min_pre_stops}
        steps.append(SampleStep("min_pre_stops", reason, before, keep.height, "counties", details))
    if spec.max_pre_unknown_share is not None:
        ok = per_county.filter(
            (pl.col("pre_stops") > 0)
            & (pl.col("pre_unknown") / pl.col("pre_stops") <= spec.max_pre_unknown_share)
        ).select("county_fips")
        before = keep.height
        keep = keep.join(ok, on="county_fips", how="semi")
        reason = f"counties with at most {spec.max_pre_unknown_share:.0%} unknown race before adoption"
        details = {"max_pre_unknown_share": spec.max_pre_unknown_share}
        steps.append(SampleStep("race_coverage", reason, before, keep.height, "counties", details))
    return panel.join(keep, on="county_fips", how="semi"), steps


__all__ = ["REASON_CATEGORY_COLUMN", "Panel", "PanelSpec", "build_panel"]
