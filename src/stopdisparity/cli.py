"""The ``stopdisparity`` command line: a thin typer layer over :mod:`stopdisparity.api`.

Machine-readable output (``--json``) goes to stdout as exactly one JSON document; progress bars and
logs go to stderr. Exit status 0 means the command did its work (an ingest committed, quarantined
rows or not); non-zero means nothing changed, and stderr says why.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import polars as pl
import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

from stopdisparity.errors import StopDisparityError

app = typer.Typer(
    name="stopdisparity",
    help="Racial disparities in police traffic stops, before and after a policy such as 287(g).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)


def _fail(e: Exception) -> typer.Exit:
    err.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
    return typer.Exit(code=2)


def _emit_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log each step to stderr.")] = False,
) -> None:
    """Measure racial disparities in traffic stops and how they change when a policy starts or ends."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(levelname)s %(name)s: %(message)s",
    )


@app.command()
def synth(
    out: Annotated[Path, typer.Argument(help="Directory to write the OPP-format files and truth.json into.")],
    rows: Annotated[int, typer.Option(help="Total stops across all files.")] = 200_000,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives byte-identical files.")] = 1,
    scenario: Annotated[
        str, typer.Option(help="Planted-effect scenario (see `synth.SCENARIOS`).")
    ] = "constant",
    state: Annotated[
        list[str] | None, typer.Option("--state", help="Only these states (NC, SC); repeatable.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print truth.json's content to stdout.")] = False,
) -> None:
    """Write synthetic stops in the exact OPP format, with the planted truth in truth.json."""
    from stopdisparity import synth as synth_mod

    try:
        kwargs: dict[str, Any] = {"scenario": scenario}
        if state:
            kwargs["states"] = tuple(s.upper() for s in state)
        spec = synth_mod.SynthSpec(**kwargs)
        truth = synth_mod.write_opp_files(out, spec, rows=rows, seed=seed, progress=not quiet)
    except StopDisparityError as e:
        raise _fail(e) from e
    if as_json:
        _emit_json(truth)
    elif not quiet:
        err.print(f"wrote {rows:,} stops to {out} (truth in {out / 'truth.json'})")


@app.command()
def ingest(
    files: Annotated[list[Path], typer.Argument(help="OPP files: .csv, .csv.gz, .csv.zip or .parquet.")],
    store: Annotated[Path, typer.Option("--store", help="Store directory (created if missing).")],
    state: Annotated[
        str | None, typer.Option("--state", help="State for every file (default: from the file name).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON report to stdout.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or summary.")] = False,
    memory_limit: Annotated[str, typer.Option(help="DuckDB memory limit, e.g. 2GB.")] = "2GB",
    threads: Annotated[int | None, typer.Option(help="DuckDB threads (default: all cores).")] = None,
    encoding: Annotated[str, typer.Option(help="Text encoding of CSV files (utf-8, latin-1).")] = "utf-8",
) -> None:
    """Ingest OPP stop files into a store; every row is stored or quarantined with a reason."""
    from stopdisparity.api import ingest as api_ingest

    try:
        if quiet:
            report = api_ingest(
                files, store, state=state, memory_limit=memory_limit, threads=threads, encoding=encoding
            )
        else:
            with _byte_progress() as callback:
                report = api_ingest(
                    files,
                    store,
                    state=state,
                    memory_limit=memory_limit,
                    threads=threads,
                    encoding=encoding,
                    progress=callback,
                )
    except StopDisparityError as e:
        raise _fail(e) from e
    if as_json:
        _emit_json(report.to_json())
    elif not quiet:
        for f in report.files:
            err.print(
                f"{f.name}: {f.status}; read {f.rows_read:,}, stored {f.rows_stored:,}, "
                f"quarantined {f.rows_quarantined:,}"
                + (
                    f" ({', '.join(f'{k} {v:,}' for k, v in f.quarantine_reasons.items())})"
                    if f.rows_quarantined
                    else ""
                )
                + (f"; {f.rows_without_county:,} rows without a county FIPS" if f.rows_without_county else "")
                + (f"; skipped non-CSV members: {', '.join(f.skipped_members)}" if f.skipped_members else "")
                + (f"; same file as {', '.join(f.same_file_as)} (stored twice)" if f.same_file_as else ""),
                highlight=False,
            )
        err.print(
            f"total: read {report.rows_read:,} = stored {report.rows_stored:,} + quarantined "
            f"{report.rows_quarantined:,}",
            highlight=False,
        )


class _byte_progress:
    """A rich progress bar on stderr, one task per source, advanced by bytes read."""

    def __enter__(self) -> Any:
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TimeElapsedColumn(),
            console=err,
            transient=False,
        )
        self.progress.__enter__()
        self.tasks: dict[str, Any] = {}

        def callback(name: str, done: int, total: int | None) -> None:
            if name not in self.tasks:
                self.tasks[name] = self.progress.add_task(name, total=total)
            self.progress.update(self.tasks[name], completed=done, total=total)

        return callback

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(None, None, None)


@app.command()
def summary(
    store: Annotated[Path, typer.Option("--store", help="Store directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print rows as JSON to stdout.")] = False,
) -> None:
    """Stops by state, year and race in a store, with the manifest's reconciliation."""
    from rich.table import Table

    from stopdisparity.api import open_store, stops_by_state_year_race

    try:
        st = open_store(store)
        counts = stops_by_state_year_race(st)
        manifest = st.manifest()
    except StopDisparityError as e:
        raise _fail(e) from e
    if as_json:
        _emit_json(counts.to_dicts())
        return
    from stopdisparity.schema import RACES

    wide = counts.pivot(on="subject_race", index=["state", "year"], values="stops", sort_columns=True)
    present = [c for c in wide.columns if c not in ("state", "year")]
    races = [r for r in RACES if r in present] + [r for r in present if r not in RACES]
    wide = wide.with_columns(pl.col(races).fill_null(0))
    table = Table(title=f"Stops by state, year and race — {store}")
    for col in ("state", "year", *races, "total"):
        table.add_column(col, justify="left" if col == "state" else "right")
    for row in wide.iter_rows(named=True):
        total = sum(row[r] for r in races)
        table.add_row(
            row["state"], "NA" if row["year"] is None else str(row["year"]),
            *[f"{row[r]:,}" for r in races], f"{total:,}",
        )  # fmt: skip
    out = Console(width=None if sys.stdout.isatty() else 160)
    out.print(table)
    for name, entry in manifest["sources"].items():
        out.print(
            f"{name}: read {entry['rows_read']:,} = stored {entry['rows_stored']:,} + quarantined "
            f"{entry['rows_quarantined']:,}; sha256 {entry['sha256'][:12]}…",
            highlight=False,
        )


@app.command()
def quality(
    store: Annotated[Path, typer.Option("--store", help="Store directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document to stdout.")] = False,
) -> None:
    """Data-quality flags per source: rows kept but implausible, with their share of stored rows."""
    import math

    from stopdisparity.quality import FLAGS, quality_table
    from stopdisparity.store import open_store

    try:
        table = quality_table(open_store(store).manifest())
    except StopDisparityError as e:
        raise _fail(e) from e
    if as_json:
        rows = [
            r | {"share": None if r["share"] is None or math.isnan(r["share"]) else r["share"]}
            for r in table.to_dicts()
        ]
        _emit_json({"store": str(store), "flags": dict(FLAGS), "sources": rows})
        return
    _print_frame(
        table.with_columns(pl.col("share").round(6)),
        title=f"Data-quality flags (rows kept) — {store}; NA: the source lacks the flag's columns",
    )


def _race_pair_option(value: str, option: str = "--race-pair") -> tuple[str, str]:
    """'focal,reference' -> (focal, reference), or a clear error naming the option."""
    pair = tuple(r.strip() for r in value.split(","))
    if len(pair) != 2 or not all(pair):
        raise StopDisparityError(f"{option} must be two races separated by a comma; got {value!r}")
    return pair  # type: ignore[return-value]


def _years_option(value: str | None) -> tuple[int, int] | None:
    """'2000-2015' (or '2010') -> (first, last); None when not given."""
    if not value:
        return None
    first, _, last = value.partition("-")
    try:
        return (int(first), int(last or first))
    except ValueError:
        raise StopDisparityError(f"--years must be FIRST-LAST, e.g. 2000-2015; got {value!r}") from None


def _cell(value: Any) -> str:
    if value is None:
        return "NA"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _print_frame(frame: pl.DataFrame, title: str | None = None) -> None:
    """A polars frame as a rich table on stdout."""
    from rich.table import Table

    table = Table(title=title)
    for col in frame.columns:
        table.add_column(col)
    for row in frame.iter_rows():
        table.add_row(*[_cell(v) for v in row])
    Console(width=None if sys.stdout.isatty() else 160).print(table)


@app.command()
def panel(
    store: Annotated[Path, typer.Option("--store", help="Store directory.")],
    out: Annotated[Path, typer.Option("--out", help="Panel file (.parquet or .csv); a .json beside it.")],
    state: Annotated[list[str] | None, typer.Option("--state", help="States to keep; repeatable.")] = None,
    agency: Annotated[
        list[str] | None,
        typer.Option("--agency", help="Stopping agency (department_name), e.g. 'NC State Highway Patrol'."),
    ] = None,
    policy: Annotated[str, typer.Option(help="'287g' (shipped registry) or a policy CSV path.")] = "287g",
    period: Annotated[str, typer.Option(help="month, quarter or year.")] = "month",
    design: Annotated[str, typer.Option(help="spillover (default) or direct.")] = "spillover",
    years: Annotated[str | None, typer.Option(help="First and last year, e.g. 2000-2015.")] = None,
    stop_type: Annotated[list[str] | None, typer.Option("--stop-type", help="vehicular/pedestrian.")] = None,
    reason: Annotated[
        list[str] | None, typer.Option("--reason", help="reason_for_stop values to keep.")
    ] = None,
    by: Annotated[
        list[str] | None, typer.Option("--by", help="Extra stop-level columns to split cells.")
    ] = None,
    min_pre_stops: Annotated[int | None, typer.Option(help="Eligibility: minimum pre-period stops.")] = None,
    max_pre_unknown_share: Annotated[
        float | None, typer.Option(help="Eligibility: maximum pre-period share of unknown race.")
    ] = None,
    model: Annotated[
        list[str] | None, typer.Option("--model", help="Agreement models that count (default: all).")
    ] = None,
    agency_type: Annotated[
        list[str] | None, typer.Option("--agency-type", help="Agency types that count (default: all).")
    ] = None,
    min_confidence: Annotated[str, typer.Option(help="low, medium or high.")] = "low",
    unknown_model: Annotated[
        str, typer.Option(help="treat_as_jail, exclude_county or treat_as_control.")
    ] = "treat_as_jail",
    exit_rule: Annotated[str, typer.Option("--exit", help="in_force, absorbing or censor.")] = "in_force",
    start_lag: Annotated[int, typer.Option(help="Periods from adoption to the first treated period.")] = 0,
    anticipation: Annotated[int, typer.Option(help="Anticipation periods (recorded for estimators).")] = 0,
    mid_period: Annotated[str, typer.Option(help="first_day, any_day or majority.")] = "first_day",
    extra_policy: Annotated[
        list[str] | None,
        typer.Option("--extra-policy", help="NAME=PATH: another policy file with its own timing columns."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the sample log and lineage as JSON.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing but errors.")] = False,
    memory_limit: Annotated[str, typer.Option(help="DuckDB memory limit.")] = "2GB",
) -> None:
    """Build a county x period x race panel with treatment timing, population and a sample log."""
    from stopdisparity.panel import PanelSpec, build_panel
    from stopdisparity.policy import TreatmentSpec

    try:
        spec = PanelSpec(
            states=tuple(state or ()),
            agencies=tuple(agency or ()),
            years=_years_option(years),
            stop_types=tuple(stop_type or ()),
            reasons=tuple(reason or ()),
            period=period,  # type: ignore[arg-type]
            design=design,  # type: ignore[arg-type]
            by=tuple(by or ()),
            min_pre_stops=min_pre_stops,
            max_pre_unknown_share=max_pre_unknown_share,
        )
        treatment_args: dict[str, Any] = {
            "min_confidence": min_confidence,
            "unknown_model": unknown_model,
            "exit": exit_rule,
            "start_lag": start_lag,
            "anticipation": anticipation,
            "mid_period": mid_period,
        }
        if model:
            treatment_args["models"] = tuple(model)
        if agency_type:
            treatment_args["agency_types"] = tuple(agency_type)
        treatment = TreatmentSpec(**treatment_args)
        extras: dict[str, tuple[str, TreatmentSpec]] = {}
        for item in extra_policy or ():
            name, sep, path = item.partition("=")
            if not sep or not name or not path:
                raise StopDisparityError(f"--extra-policy must be NAME=PATH; got {item!r}")
            extras[name] = (path, TreatmentSpec())
        result = build_panel(
            store, spec, policy=policy, treatment=treatment, extra_policies=extras, memory_limit=memory_limit
        )
        result.write(out)
    except (StopDisparityError, ValueError) as e:
        raise _fail(e) from e
    if as_json:
        _emit_json(result.to_json())
    elif not quiet:
        _print_frame(result.sample_log.to_frame().drop("share_dropped"), "Sample log")
        summary = result.lineage["policies"]["main"]["treated_summary"]
        if summary:
            _print_frame(pl.DataFrame(summary), "Treated counties by state, model and cohort")
        err.print(f"wrote {out} ({result.frame.height:,} cells) and {out.with_suffix('.json')}")


DID_ESTIMATORS = (
    "twfe-logit",
    "twfe-poisson",
    "twfe-linear",
    "event-study",
    "etwfe",
    "callaway-santanna",
    "sun-abraham",
    "bacon",
    "twfe-weights",
    "bjs",
)
DID_INFERENCE = ("cluster", "cr2", "cr3", "wild", "score", "ri")
#: The estimators of issue 6 (:mod:`stopdisparity.models.staggered`): their own inference only.
STAGGERED = DID_ESTIMATORS[4:]

# Options shared by `did` and `sensitivity` (one declaration each).
StoreOpt = Annotated[Path | None, typer.Option("--store", help="Store directory (builds the panel).")]
PanelOpt = Annotated[
    Path | None,
    typer.Option(
        "--panel",
        help="A panel file (.parquet/.csv): the `stopdisparity panel` layout, or any unit x period "
        "panel with --outcome.",
    ),
]
StateOpt = Annotated[list[str] | None, typer.Option("--state", help="States to keep; repeatable.")]
AgencyOpt = Annotated[list[str] | None, typer.Option("--agency", help="Stopping agency; repeatable.")]
PolicyOpt = Annotated[str, typer.Option(help="'287g' (shipped registry) or a policy CSV path.")]
PeriodOpt = Annotated[
    str, typer.Option(help="With --store: month, quarter or year. With --panel: the period column.")
]
UnitOpt = Annotated[str, typer.Option(help="With --panel: the unit column.")]
OutcomeOpt = Annotated[
    str | None,
    typer.Option(
        "--outcome",
        help="Generic panel (one row per unit x period): the outcome column; successes with --trials.",
    ),
]
TrialsOpt = Annotated[
    str | None, typer.Option("--trials", help="Generic panel: binomial trials column (twfe-logit).")
]
FirstTreatedOpt = Annotated[
    str | None,
    typer.Option(
        "--first-treated",
        help="Generic panel: first treated period column (0 or empty = never; absorbing).",
    ),
]
CovariatesOpt = Annotated[
    list[str] | None,
    typer.Option("--covariates", help="Generic panel: covariate columns, comma-separated or repeated."),
]
RacePairOpt = Annotated[str, typer.Option(help="focal,reference races.")]
ClusterOpt = Annotated[
    str | None, typer.Option(help="Column to cluster by (default: county_fips; generic panel: the unit).")
]
MissingOpt = Annotated[str, typer.Option(help="raise or drop rows with missing values.")]
CohortOpt = Annotated[
    str,
    typer.Option(
        help="Staggered estimators on the race layout: cohorts by calendar year of adoption (year; the "
        "panel is summed to years) or by the panel's own period."
    ),
]
ScaleOpt = Annotated[
    str,
    typer.Option(
        help="Linear staggered estimators on the race layout: the outcome is the focal race's share "
        "(share; parallel trends in levels) or its empirical log odds (logodds; the headline's assumption)."
    ),
]
ControlOpt = Annotated[
    str | None, typer.Option(help="callaway-santanna, etwfe: comparison units, never or not_yet.")
]
MemoryOpt = Annotated[str, typer.Option(help="DuckDB memory limit.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the tidy rows as one JSON document.")]


@app.command()
def did(
    store: StoreOpt = None,
    panel_file: PanelOpt = None,
    state: StateOpt = None,
    agency: AgencyOpt = None,
    policy: PolicyOpt = "287g",
    period: PeriodOpt = "",
    unit: UnitOpt = "county_fips",
    treatment: Annotated[
        str | None, typer.Option(help="Race layout: the 0/1 policy column (default in_force).")
    ] = None,
    outcome: OutcomeOpt = None,
    trials: TrialsOpt = None,
    first_treated: FirstTreatedOpt = None,
    covariates: CovariatesOpt = None,
    group: Annotated[
        str | None,
        typer.Option(
            "--group", help="Column with its own period effects (group x period); race layout: state."
        ),
    ] = None,
    estimator: Annotated[
        str | None,
        typer.Option(
            help=" | ".join(DID_ESTIMATORS) + " (default: twfe-logit, or twfe-linear without --trials)"
        ),
    ] = None,
    race_pair: RacePairOpt = "hispanic,white",
    inference: Annotated[
        str | None,
        typer.Option(
            help=" | ".join(DID_INFERENCE) + " (cluster = CR1). Default: cr2 (CR2, Bell-McCaffrey df) for "
            "the TWFE models, the event study, etwfe and sun-abraham (CR1 under-covers with few effective "
            "clusters); the estimator's own inference for the others."
        ),
    ] = None,
    cluster: ClusterOpt = None,
    weights: Annotated[
        str | None,
        typer.Option(
            help="Race layout, twfe-linear: stops, county or unit-equal. Generic panel: an analytic "
            "weights column (twfe-linear)."
        ),
    ] = None,
    missing: MissingOpt = "raise",
    draws: Annotated[int, typer.Option(help="Bootstrap draws or permutations.")] = 999,
    seed: Annotated[int, typer.Option(help="Seed for bootstrap and permutation draws.")] = 20240601,
    cohort: CohortOpt = "year",
    scale: ScaleOpt = "share",
    control: ControlOpt = None,
    base_period: Annotated[
        str | None, typer.Option(help="callaway-santanna: varying (default) or universal.")
    ] = None,
    anticipation: Annotated[
        int | None, typer.Option(help="callaway-santanna: anticipation periods (default 0).")
    ] = None,
    family: Annotated[
        str | None,
        typer.Option(help="etwfe: logit (default with --trials / race layout), poisson or linear."),
    ] = None,
    leave_out: Annotated[
        bool | None,
        typer.Option(
            "--leave-out/--no-leave-out",
            help="bjs: centre each treated residual on its cohort x event-time mean without its own "
            "cluster (BJS Appendix A.6; Stata's recommended leaveout). Default: on where every cell has "
            "2+ clusters, else off with a warning; --leave-out requires it, --no-leave-out turns it off.",
        ),
    ] = None,
    as_json: JsonOpt = False,
    memory_limit: MemoryOpt = "2GB",
) -> None:
    """Difference-in-differences around a policy (headline: TWFE logit of stops by race, CR2 by county).

    Two panel forms. The race layout (`stopdisparity panel`, or --store): one row per county x period x
    race; the estimate is about the focal race's share of the pair's stops. A generic panel (--panel
    FILE --outcome COL): one row per --unit x --period, treatment absorbing from --first-treated
    (period >= first treated; 0 or empty = never treated); with --trials the outcome counts successes
    (twfe-logit), without it the outcome is continuous (twfe-linear, optional --weights COL).

    The heterogeneity-robust estimators (etwfe, callaway-santanna, sun-abraham, bjs) and the TWFE
    diagnostics (bacon, twfe-weights) take both forms; on the race layout adoption is absorbing from a
    county's first agreement and cohorts are calendar years of adoption unless --cohort period.
    """
    try:
        options = _staggered_options(
            estimator, cohort=cohort, control=control, base_period=base_period, anticipation=anticipation,
            family=family, draws=draws, seed=seed, leave_out=leave_out,
        )  # fmt: skip
        from stopdisparity.models._fe import few_clusters_heeded

        method = inference or _default_inference(estimator)
        with few_clusters_heeded(method):
            result, title = _did_result(
                store=store, panel_file=panel_file, state=state, agency=agency, policy=policy, period=period,
                unit=unit, treatment=treatment, outcome=outcome, trials=trials, first_treated=first_treated,
                covariates=covariates, group=group, estimator=estimator, race_pair=race_pair,
                inference=method, by_default=inference is None, cluster=cluster, weights=weights,
                missing=missing, draws=draws, seed=seed, cohort=cohort, scale=scale, options=options,
                memory_limit=memory_limit,
            )  # fmt: skip
        tidy = result.tidy()
    except (StopDisparityError, ValueError) as e:
        raise _fail(e) from e
    if as_json:
        _emit_json(tidy.to_dicts())
    else:
        shown = ("term", "estimate", "std_error", "p_value", "ci_low", "ci_high", "odds_ratio", "pp_change",
                 "weight", "n_clusters", "effective_clusters", "inference")  # fmt: skip
        cols = [c for c in shown if c in tidy.columns]
        _print_frame(tidy.select(cols), title)
        err.print(f"estimand: {tidy['estimand'][0]}", highlight=False)


SENSITIVITY_ESTIMATORS = ("event-study", "sun-abraham", "callaway-santanna", "etwfe")
SENSITIVITY_METHODS = ("relative-magnitudes", "smoothness")


@app.command()
def sensitivity(
    store: StoreOpt = None,
    panel_file: PanelOpt = None,
    state: StateOpt = None,
    agency: AgencyOpt = None,
    policy: PolicyOpt = "287g",
    period: PeriodOpt = "",
    unit: UnitOpt = "county_fips",
    outcome: OutcomeOpt = None,
    trials: TrialsOpt = None,
    first_treated: FirstTreatedOpt = None,
    covariates: CovariatesOpt = None,
    estimator: Annotated[
        str, typer.Option(help=" | ".join(SENSITIVITY_ESTIMATORS) + ": the event study to bound.")
    ] = "event-study",
    race_pair: RacePairOpt = "hispanic,white",
    cluster: ClusterOpt = None,
    missing: MissingOpt = "raise",
    cohort: CohortOpt = "year",
    scale: ScaleOpt = "share",
    control: ControlOpt = None,
    method: Annotated[
        str,
        typer.Option(
            help="relative-magnitudes (post violations at most Mbar x the largest pre-period one) or "
            "smoothness (slope changes at most M per period)."
        ),
    ] = "relative-magnitudes",
    m: Annotated[
        list[float] | None,
        typer.Option(
            "--m",
            help="Bounds Mbar (relative magnitudes; default 0.5 1 1.5 2) or M (smoothness; required, in "
            "the outcome's units per period); repeatable.",
        ),
    ] = None,
    event_time: Annotated[
        int | None, typer.Option(help="Bound one post event time (default: the average post effect).")
    ] = None,
    alpha: Annotated[float, typer.Option(help="Level: 1 - alpha robust confidence sets.")] = 0.05,
    as_json: JsonOpt = False,
    memory_limit: MemoryOpt = "2GB",
) -> None:
    """Rambachan & Roth (2023) bounds: how far may parallel trends fail before the effect is not robust.

    Fits the event study (--estimator, on a store, a race-layout panel or a generic panel, as `did`)
    and reports the robust confidence set of the average post-period effect (or of --event-time) for
    each bound, next to the original interval, and the breakdown value: the smallest bound at which
    the robust set includes 0. callaway-santanna is fitted with a universal base period and etwfe with
    never-treated controls (their pre-period coefficients share the reference period).
    """
    try:
        from stopdisparity.errors import check_choice

        check_choice("--estimator", estimator, SENSITIVITY_ESTIMATORS)
        check_choice("--method", method, SENSITIVITY_METHODS)
        bounds = list(m or ())
        if not bounds:
            if method == "smoothness":
                raise StopDisparityError(
                    "--method smoothness needs --m: bounds on the change in slope per period, in the "
                    "outcome's units (e.g. --m 0 --m 0.01 --m 0.02)"
                )
            bounds = [0.5, 1.0, 1.5, 2.0]
        options = _staggered_options(
            estimator, cohort=cohort, control=control, base_period=None, anticipation=None, family=None,
            draws=0, seed=0,
        )  # fmt: skip
        if estimator == "callaway-santanna":
            options["base_period"] = "universal"
        if estimator == "etwfe" and options.get("control", "never") != "never":
            raise StopDisparityError("etwfe's pre-period coefficients need --control never")
        result, title = _did_result(
            store=store, panel_file=panel_file, state=state, agency=agency, policy=policy, period=period,
            unit=unit, treatment=None, outcome=outcome, trials=trials, first_treated=first_treated,
            covariates=covariates, group=None, estimator=estimator, race_pair=race_pair, inference="cluster",
            by_default=False, cluster=cluster, weights=None, missing=missing, draws=0, seed=0, cohort=cohort,
            scale=scale, options=options, memory_limit=memory_limit,
        )  # fmt: skip
        from stopdisparity.models.sensitivity import sensitivity as bounds_of
        from stopdisparity.models.staggered import event_coefficients

        robust = bounds_of(
            event_coefficients(result),
            method=method.replace("-", "_"),  # type: ignore[arg-type]
            m=bounds,
            event_time=event_time,
            alpha=alpha,
        )
        tidy = robust.tidy()
    except (StopDisparityError, ValueError) as e:
        raise _fail(e) from e
    if as_json:
        _emit_json(tidy.to_dicts())
    else:
        shown = [c for c in ("term", "estimate", "ci_low", "ci_high", "m", "breakdown") if c in tidy.columns]
        _print_frame(tidy.select(shown), f"sensitivity ({method}) of {title}")
        err.print(f"breakdown value: {robust.breakdown:g}; {robust.inference}", highlight=False)


def _staggered_options(
    estimator: str | None,
    *,
    cohort: str,
    control: str | None,
    base_period: str | None,
    anticipation: int | None,
    family: str | None,
    draws: int,
    seed: int,
    leave_out: bool | None = None,
) -> dict[str, Any]:
    """The estimator's own options from the CLI flags; a flag given to an estimator without it is an error."""
    from stopdisparity.errors import check_choice

    if estimator is not None:
        check_choice("--estimator", estimator, DID_ESTIMATORS)
    check_choice("--cohort", cohort, ("year", "period"))
    own = {
        "--control": ("control", control, ("callaway-santanna", "etwfe")),
        "--base-period": ("base_period", base_period, ("callaway-santanna",)),
        "--anticipation": ("anticipation", anticipation, ("callaway-santanna",)),
        "--family": ("family", family, ("etwfe",)),
        "--leave-out": ("leave_out", leave_out, ("bjs",)),
    }
    options: dict[str, Any] = {}
    for flag, (key, value, takers) in own.items():
        if value is None:
            continue
        if estimator not in takers:
            raise StopDisparityError(f"{flag} applies to --estimator {' or '.join(takers)}; got {estimator}")
        options[key] = value
    if estimator == "callaway-santanna":
        options |= {"n_boot": draws, "seed": seed}
    return options


def _did_result(
    *,
    store: Path | None,
    panel_file: Path | None,
    state: list[str] | None,
    agency: list[str] | None,
    policy: str,
    period: str,
    unit: str,
    treatment: str | None,
    outcome: str | None,
    trials: str | None,
    first_treated: str | None,
    covariates: list[str] | None,
    group: str | None,
    estimator: str | None,
    race_pair: str,
    inference: str,
    by_default: bool,
    cluster: str | None,
    weights: str | None,
    missing: str,
    draws: int,
    seed: int,
    cohort: str,
    scale: str,
    options: dict[str, Any],
    memory_limit: str,
) -> tuple[Any, str]:
    """Load the panel (store, race-layout file or generic file), fit the estimator; the result and a title."""
    from stopdisparity.errors import check_choice
    from stopdisparity.models.staggered import CR2_ESTIMATORS

    check_choice("--inference", inference, DID_INFERENCE)
    check_choice("--missing", missing, ("raise", "drop"))
    cr2_staggered = inference == "cr2" and estimator in CR2_ESTIMATORS
    if estimator in STAGGERED and inference != "cluster" and not cr2_staggered:
        raise StopDisparityError(
            f"--inference {inference} applies to the TWFE models and the event study (cr2 also to etwfe "
            f"and sun-abraham); "
            f"{estimator} reports its own inference (callaway-santanna: a multiplier bootstrap with "
            "--draws and --seed)"
        )
    if (store is None) == (panel_file is None):
        raise StopDisparityError("give exactly one of --store DIR or --panel FILE")
    if outcome is not None:
        if panel_file is None:
            raise StopDisparityError("--outcome (a generic panel) needs --panel FILE, not --store")
        if scale != "share" or cohort != "year":
            raise StopDisparityError(
                "--scale and --cohort apply to the race layout; a generic panel's outcome and periods are "
                "used as given"
            )
        frame = _read_panel_file(panel_file)
        return _fit_generic(
            frame,
            outcome=outcome,
            unit=unit,
            period=period or "period",
            first_treated=first_treated,
            trials=trials,
            weights=weights,
            covariates=_covariate_names(covariates, frame.columns),
            treatment=treatment,
            race_pair=race_pair,
            estimator=estimator,
            cluster=cluster,
            group=group,
            missing=missing,
            inference=inference,
            by_default=by_default,
            draws=draws,
            seed=seed,
            options=options,
        )
    generic_only = {"--trials": trials, "--covariates": covariates}
    if estimator not in ("event-study", *STAGGERED):
        generic_only["--first-treated"] = first_treated
    given = [flag for flag, value in generic_only.items() if value]
    if given:
        raise StopDisparityError(
            f"{', '.join(given)} need(s) --outcome COL (a generic unit x period panel); the race "
            "layout takes stops by race"
        )
    pair = _race_pair_option(race_pair)
    if store is not None:
        from stopdisparity.panel import PanelSpec, build_panel

        spec = PanelSpec(
            states=tuple(state or ()),
            agencies=tuple(agency or ()),
            period=(period or "month"),  # type: ignore[arg-type]
        )
        frame = build_panel(store, spec, policy=policy, memory_limit=memory_limit).frame
        period_col = "period"
    else:
        assert panel_file is not None
        frame = _read_panel_file(panel_file)
        period_col = period or "period"
    est = estimator or "twfe-logit"
    title = f"{est}: {pair[0]} vs {pair[1]}"
    if est in STAGGERED:
        from stopdisparity.models.staggered import fit_staggered_race

        if group is not None or weights is not None:
            raise StopDisparityError(f"--group and --weights do not apply to --estimator {est}")
        result = fit_staggered_race(
            frame,
            estimator=est,  # type: ignore[arg-type]
            race_pair=pair,
            unit=unit,
            period=period_col,
            treatment=treatment or "in_force",
            first_treated=first_treated or "first_treated",
            cluster=cluster or "county_fips",
            cohort=cohort,  # type: ignore[arg-type]
            scale=scale,  # type: ignore[arg-type]
            missing=missing,  # type: ignore[arg-type]
            **_analytical(est),
            **options,
        )
        return _apply_inference(result, inference, draws, seed, by_default=by_default), title
    result = _fit_race(
        frame,
        estimator=est,
        race_pair=pair,  # type: ignore[arg-type]
        unit=unit,
        period=period_col,
        treatment=treatment or "in_force",
        cluster=cluster or "county_fips",
        weights=weights or "stops",
        inference=inference,
        by_default=by_default,
        draws=draws,
        seed=seed,
        group=group,
        missing=missing,
        first_treated=first_treated,
    )
    return result, title


def _read_panel_file(path: Path) -> pl.DataFrame:
    if not path.is_file():
        raise StopDisparityError(f"{path}: no such panel file")
    if path.suffix.lower() == ".parquet":
        return pl.read_parquet(path)
    if path.suffix.lower() == ".csv":
        return pl.read_csv(path, infer_schema_length=None)
    raise StopDisparityError(f"{path}: a panel file must end in .parquet or .csv")


def _covariate_names(values: list[str] | None, columns: list[str]) -> tuple[str, ...]:
    """Covariate names from repeated and comma-separated --covariates values.

    A value that is a column of the panel is taken whole (a name may contain commas); any other value
    is split on commas.
    """
    out: list[str] = []
    for value in values or ():
        if value in columns:
            out.append(value)
        else:
            out.extend(part.strip() for part in value.split(",") if part.strip())
    return tuple(out)


def _default_inference(estimator: str | None) -> str:
    """``did``'s inference without --inference: the fits' default (CR2) where it exists, else the own."""
    from stopdisparity.models._fe import DEFAULT_INFERENCE
    from stopdisparity.models.staggered import CR2_ESTIMATORS

    return "cluster" if estimator in STAGGERED and estimator not in CR2_ESTIMATORS else DEFAULT_INFERENCE


def _analytical(estimator: str) -> dict[str, str]:
    """A staggered fit's option for its analytical CR1 (``did`` applies the requested inference itself)."""
    from stopdisparity.models.staggered import CR2_ESTIMATORS

    return {"inference": "cluster"} if estimator in CR2_ESTIMATORS else {}


def _apply_inference(
    result: Any, inference: str, draws: int, seed: int, *, by_default: bool = False, **extra: Any
) -> Any:
    """The requested inference on a fit made with ``inference="cluster"`` (``cluster``: unchanged).

    ``by_default``: the default CR2, which falls back to CR1 with a warning where it cannot be formed;
    asked for by name, it raises instead.
    """
    if inference == "cluster":
        return result
    from stopdisparity.models import inference as inference_mod

    if by_default:
        from stopdisparity.models._fe import with_default_inference

        return with_default_inference(result, inference, stacklevel=2)  # type: ignore[arg-type]

    options: dict[str, Any] = {} if inference in ("cr2", "cr3") else {"draws": draws, "seed": seed, **extra}
    return inference_mod.apply_inference(result, inference, **options)  # type: ignore[arg-type]


def _fit_generic(
    frame: pl.DataFrame,
    *,
    outcome: str,
    unit: str,
    period: str,
    first_treated: str | None,
    trials: str | None,
    weights: str | None,
    covariates: tuple[str, ...],
    treatment: str | None,
    race_pair: str,
    estimator: str | None,
    cluster: str | None,
    group: str | None,
    missing: str,
    inference: str,
    by_default: bool,
    draws: int,
    seed: int,
    options: dict[str, Any],
) -> tuple[Any, str]:
    """Fit a generic unit x period panel (``--outcome``); return the result and a title."""
    if first_treated is None:
        raise StopDisparityError(
            "--outcome (a generic panel) needs --first-treated COL: the period each unit's treatment "
            "starts (0 or empty = never treated)"
        )
    if treatment is not None:
        raise StopDisparityError(
            f"--treatment applies to the race layout; a generic panel's treatment is absorbing from "
            f"--first-treated ({first_treated!r}: in force when {period} >= {first_treated}); got "
            f"--treatment {treatment!r}"
        )
    if race_pair != "hispanic,white":
        raise StopDisparityError("--race-pair applies to the race layout, not to a generic panel (--outcome)")
    if estimator == "twfe-poisson":
        raise StopDisparityError(
            "--estimator twfe-poisson applies to the race layout; a generic panel takes twfe-logit "
            "(with --trials), twfe-linear or event-study"
        )
    common: dict[str, Any] = {
        "yname": outcome, "idname": unit, "tname": period, "gname": first_treated, "trials": trials,
        "weights": weights, "xnames": covariates, "cluster": cluster, "missing": missing,
    }  # fmt: skip
    if estimator in STAGGERED:
        from stopdisparity.models.staggered import fit_staggered

        if group is not None:
            raise StopDisparityError(f"--group does not apply to --estimator {estimator}")
        result = fit_staggered(frame, estimator=estimator, **common, **_analytical(estimator), **options)  # type: ignore[arg-type]
        result = _apply_inference(result, inference, draws, seed, by_default=by_default)
        return result, f"{estimator}: {outcome}"
    common |= {"group": group, "inference": "cluster"}  # the requested inference is applied below
    if estimator == "event-study":
        from stopdisparity.models.event_study import fit_event_study_panel

        result: Any = fit_event_study_panel(frame, **common)
        label = f"event-study-{result.estimator}"
    else:
        from stopdisparity.models.did import fit_did_panel

        result = fit_did_panel(frame, estimator=estimator, **common)  # type: ignore[arg-type]
        label = result.estimator
    extra = {"within": group} if inference == "ri" else {}
    result = _apply_inference(result, inference, draws, seed, by_default=by_default, **extra)
    return result, f"{label}: {outcome}"


def _fit_race(
    frame: pl.DataFrame,
    *,
    estimator: str,
    race_pair: tuple[str, str],
    unit: str,
    period: str,
    treatment: str,
    cluster: str,
    weights: str,
    inference: str,
    by_default: bool,
    draws: int,
    seed: int,
    group: str | None = None,
    missing: str = "raise",
    first_treated: str | None = None,
) -> Any:
    """Fit the requested estimator on a race-layout panel and apply the requested inference."""
    common: dict[str, Any] = {
        "race_pair": race_pair, "unit": unit, "period": period, "treatment": treatment, "cluster": cluster,
        "missing": missing, "inference": "cluster",  # the requested inference is applied below
    }  # fmt: skip
    if group is not None:
        common["group"] = group
    if estimator == "event-study":
        from stopdisparity.models import event_study

        common.pop("treatment")
        if first_treated is not None:
            common["first_treated"] = first_treated
        result: Any = event_study.fit_event_study(frame, **common)
    elif estimator == "twfe-poisson":
        from stopdisparity.models.counts import fit_counts

        result = fit_counts(frame, **common)
    else:
        from stopdisparity.models.did import fit_did

        extra = {"weights": weights} if estimator == "twfe-linear" else {}
        result = fit_did(frame, estimator=estimator, **common, **extra)  # type: ignore[arg-type]
    return _apply_inference(result, inference, draws, seed, by_default=by_default)


def _reason_categories_option(items: list[str], file: Path | None) -> dict[str, list[str]]:
    """--reason-category NAME=VALUE (repeat a NAME to add values) and/or a JSON file {name: [values]}."""
    categories: dict[str, list[str]] = {}
    if file is not None:
        loaded = json.loads(file.read_text(encoding="utf-8"))
        if not isinstance(loaded, dict):
            raise StopDisparityError(f"{file}: must hold one JSON object {{name: [reason values]}}")
        categories.update(loaded)
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise StopDisparityError(f"--reason-category must be NAME=REASON_VALUE; got {item!r}")
        categories.setdefault(name.strip(), []).append(value)
    return categories


@app.command()
def falsify(
    store: Annotated[Path, typer.Option("--store", help="Store directory.")],
    state: Annotated[list[str] | None, typer.Option("--state", help="States to keep; repeatable.")] = None,
    agency: Annotated[list[str] | None, typer.Option("--agency", help="Stopping agency; repeatable.")] = None,
    policy: Annotated[str, typer.Option(help="'287g' (shipped registry) or a policy CSV path.")] = "287g",
    period: Annotated[str, typer.Option(help="month, quarter or year.")] = "month",
    design: Annotated[str, typer.Option(help="spillover (default) or direct.")] = "spillover",
    years: Annotated[str | None, typer.Option(help="First and last year, e.g. 2000-2015.")] = None,
    race_pair: Annotated[str, typer.Option(help="Headline focal,reference races.")] = "hispanic,white",
    placebo_pair: Annotated[str, typer.Option(help="Placebo focal,reference races.")] = "black,white",
    placebo_shift: Annotated[
        list[int] | None,
        typer.Option(
            "--placebo-shift", help="Placebo adoption shift in periods; repeatable (default 2 years)."
        ),
    ] = None,
    outcome: Annotated[
        list[str] | None,
        typer.Option(
            "--outcome", help="Boolean stop column; repeatable (default arrest_made, search_conducted)."
        ),
    ] = None,
    reason_category: Annotated[
        list[str] | None,
        typer.Option(
            "--reason-category",
            help="NAME=REASON_VALUE, e.g. 'equipment=Vehicle Equipment Violation'; repeat a NAME to add "
            "values.",
        ),
    ] = None,
    reason_categories_file: Annotated[
        Path | None, typer.Option("--reason-categories", help="JSON file {name: [reason_for_stop values]}.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write rows, sample logs and lineage to this .json file.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print rows, sample logs and lineage as one JSON document.")
    ] = False,
    memory_limit: Annotated[str, typer.Option(help="DuckDB memory limit.")] = "2GB",
) -> None:
    """The headline DiD with placebo, recording, placebo-date and post-stop outcome rows beside it.

    Post-stop outcome rows condition on being stopped (Knox, Lowe & Mummolo 2020): descriptive.
    """
    from stopdisparity.models.falsification import falsify as run_falsify
    from stopdisparity.panel import PanelSpec

    try:
        spec = PanelSpec(
            states=tuple(state or ()),
            agencies=tuple(agency or ()),
            years=_years_option(years),
            period=period,  # type: ignore[arg-type]
            design=design,  # type: ignore[arg-type]
        )
        options: dict[str, Any] = {}
        if outcome is not None:
            options["outcomes"] = tuple(outcome)
        categories = _reason_categories_option(reason_category or [], reason_categories_file)
        result = run_falsify(
            store,
            spec,
            policy=policy,
            race_pair=_race_pair_option(race_pair),
            placebo_pair=_race_pair_option(placebo_pair, "--placebo-pair"),
            placebo_shifts=tuple(placebo_shift) if placebo_shift else None,
            reason_categories=categories or None,
            memory_limit=memory_limit,
            **options,
        )
    except (StopDisparityError, ValueError, OSError) as e:
        raise _fail(e) from e
    doc = result.to_json()
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
    if as_json:
        _emit_json(doc)
        return
    tidy = result.tidy()
    cols = [c for c in ("check", "estimate", "std_error", "p_value", "ci_low", "ci_high", "n_clusters",
                        "n_treated_clusters", "n_stops", "outcome_missing") if c in tidy.columns]  # fmt: skip
    methods = dict.fromkeys(label.split(" by ")[0] for label in tidy.get_column("inference").to_list())
    _print_frame(tidy.select(cols), f"Headline and falsification checks ({', '.join(methods)})")
    if result.outcome_counts().height:
        _print_frame(result.outcome_counts(), "Post-stop outcomes: focal stops with / without / missing")
        err.print(
            "outcome rows condition on being stopped (Knox, Lowe & Mummolo 2020): descriptive, not causal",
            highlight=False,
        )
    if out is not None:
        err.print(f"wrote {out}")


policy_app = typer.Typer(
    help="Policy registries: list, show, validate, import ICE sheets.", no_args_is_help=True
)
app.add_typer(policy_app, name="policy")


@policy_app.command("list")
def policy_list() -> None:
    """The shipped policies (use their name with --policy)."""
    from stopdisparity.policy import list_policies

    _print_frame(list_policies(), "Shipped policies")


@policy_app.command("show")
def policy_show(
    policy: Annotated[str, typer.Argument(help="'287g' or a policy CSV path.")] = "287g",
    agency: Annotated[
        str | None, typer.Option(help="Show the rows of agencies matching this name or FIPS.")
    ] = None,
    state: Annotated[str | None, typer.Option(help="Only this state.")] = None,
) -> None:
    """Counts by state, model and agency type, or the rows of one agency."""
    from stopdisparity.policy import describe_registry, load_registry, resolve_policy, show_agency

    try:
        frame = load_registry(resolve_policy(policy))
        if state:
            frame = frame.filter(pl.col("state") == state.upper())
        if agency:
            cols = [
                "registry_row",
                "state",
                "agency",
                "county_fips",
                "model",
                "signed",
                "ended",
                "confidence",
            ]
            _print_frame(show_agency(frame, agency).select(cols), f"Rows matching {agency!r}")
        else:
            _print_frame(describe_registry(frame), f"{policy}: rows by state, model and agency type")
    except StopDisparityError as e:
        raise _fail(e) from e


@policy_app.command("validate")
def policy_validate(
    path: Annotated[Path, typer.Argument(help="A policy CSV in the registry format.")],
) -> None:
    """Check a policy file; every problem names its line, column and value. Exit 1 if any."""
    from stopdisparity.policy import load_registry, validate_registry

    try:
        frame = load_registry(path, strict=False)
    except StopDisparityError as e:
        raise _fail(e) from e
    problems = validate_registry(
        frame.with_columns(pl.col("signed", "ended").cast(pl.String)), source=str(path)
    )
    if not problems:
        err.print(f"{path}: {frame.height} rows, no problems")
        return
    for p in problems:
        err.print(str(p), highlight=False)
    err.print(f"{path}: {len(problems)} problem(s)")
    raise typer.Exit(code=1)


@policy_app.command("import")
def policy_import(
    sheet_file: Annotated[Path, typer.Argument(help="An ICE participating-agencies sheet (.xlsx or .csv).")],
    out: Annotated[Path, typer.Option("--out", help="Registry CSV to write.")],
    sheet: Annotated[str | None, typer.Option(help="Worksheet name (default: the first).")] = None,
) -> None:
    """Read an ICE sheet into registry rows; rows needing attention are listed, never dropped silently."""
    from stopdisparity.policy import import_ice_sheet, write_registry

    try:
        result = import_ice_sheet(sheet_file, sheet=sheet)
        write_registry(result.rows, out)
    except StopDisparityError as e:
        raise _fail(e) from e
    err.print(f"{result.source}: header on row {result.header_row}; wrote {result.rows.height} rows to {out}")
    if result.unresolved.height:
        _print_frame(result.unresolved, "Rows needing attention (imported = kept with a default)")


if __name__ == "__main__":  # pragma: no cover
    app()
