"""The staggered estimators' shared input (prepare_staggered, race_unit_panel) and synth.cell_truth."""

from __future__ import annotations

import warnings

import numpy as np
import polars as pl
import pytest

from stopdisparity.errors import DroppedRowsWarning, SparseCellWarning, SpecificationError
from stopdisparity.models._staggered_data import prepare_staggered, warn_thin_cells
from stopdisparity.models.staggered import race_unit_panel
from stopdisparity.synth import SynthSpec, cell_truth, cells, truth


def _panel(seed: int = 1) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(12):
        g = (0, 2004, 2006)[u % 3]
        for t in range(2003, 2008):
            n = int(rng.integers(5, 50))
            rows.append({"id": f"c{u:02d}", "year": t, "first": g, "y": int(rng.integers(0, n + 1)), "n": n})
    return pl.DataFrame(rows)


def test_layout_share_and_unit_weights() -> None:
    d = _panel()
    p = prepare_staggered(d, yname="y", idname="id", tname="year", gname="first", trials="n")
    f = p.frame
    assert p.periods == (2003, 2004, 2005, 2006, 2007)
    assert p.cohorts == (2004, 2006)
    assert (p.n_units, p.n_never_treated, p.balanced) == (12, 4, True)
    joined = f.join(d.rename({"id": "unit", "year": "period"}), on=["unit", "period"])
    np.testing.assert_allclose(joined["y"].to_numpy(), (joined["y_right"] / joined["n_right"]).to_numpy())
    np.testing.assert_array_equal(
        joined["treated"].to_numpy(), ((joined["g"] > 0) & (joined["period"] >= joined["g"])).to_numpy()
    )
    # unit weight: mean trials before adoption; never treated: before the first cohort (2004)
    c01 = d.filter(pl.col("id") == "c01")  # g = 2004: only 2003 is pre
    assert f.filter(pl.col("unit") == "c01")["w"][0] == c01.filter(pl.col("year") < 2004)["n"].mean()
    c02 = d.filter(pl.col("id") == "c02")  # g = 2006
    assert f.filter(pl.col("unit") == "c02")["w"][0] == pytest.approx(
        c02.filter(pl.col("year") < 2006)["n"].mean()
    )
    c00 = d.filter(pl.col("id") == "c00")  # never treated
    assert f.filter(pl.col("unit") == "c00")["w"][0] == c00.filter(pl.col("year") < 2004)["n"].mean()
    m = p.matrix()
    assert m.shape == (12, 5) and np.isfinite(m).all()
    assert p.cohort_sizes().to_dicts() == [
        {"g": 0, "n_units": 4},
        {"g": 2004, "n_units": 4},
        {"g": 2006, "n_units": 4},
    ]
    sup = {r["e"]: r["n_units"] for r in p.event_support().iter_rows(named=True)}
    assert sup[-3] == 4 and sup[0] == 8 and sup[3] == 4


def test_continuous_outcome_and_weights() -> None:
    d = _panel().with_columns(
        pl.col("y").cast(pl.Float64).alias("x"), (pl.col("id").str.slice(1).cast(pl.Int64) + 1).alias("pop")
    )
    p = prepare_staggered(d, yname="x", idname="id", tname="year", gname="first", weights="pop")
    assert (
        p.frame["y"].to_list()
        == p.frame.join(d.rename({"id": "unit", "year": "period"}), on=["unit", "period"])["x"].to_list()
    )
    assert "constant within unit" in p.unit_weight_rule
    assert p.frame.filter(pl.col("unit") == "c03")["w"].unique().to_list() == [4.0]


def test_zero_trials_and_unbalanced() -> None:
    d = _panel().with_columns(
        pl.when((pl.col("id") == "c03") & (pl.col("year") == 2005)).then(0).otherwise(pl.col("n")).alias("n"),
        pl.when((pl.col("id") == "c03") & (pl.col("year") == 2005)).then(0).otherwise(pl.col("y")).alias("y"),
    )
    with pytest.raises(SpecificationError, match=r"'n' is 0 at id='c03', year=2005.*--period year"):
        prepare_staggered(d, yname="y", idname="id", tname="year", gname="first", trials="n")
    with pytest.warns(DroppedRowsWarning, match="1 unit.*zero-trials"):
        p = prepare_staggered(
            d, yname="y", idname="id", tname="year", gname="first", trials="n", missing="drop"
        )
    assert p.n_units == 11 and p.n_dropped == 5
    gap = _panel().filter(~((pl.col("id") == "c05") & (pl.col("year") == 2007)))
    with pytest.raises(SpecificationError, match=r"balanced panel.*not observed in all 5 periods.*c05"):
        prepare_staggered(gap, yname="y", idname="id", tname="year", gname="first", trials="n")
    with pytest.raises(SpecificationError, match="no unit is ever treated"):
        prepare_staggered(
            _panel().with_columns(pl.lit(0).alias("first")),
            yname="y",
            idname="id",
            tname="year",
            gname="first",
            trials="n",
        )


def test_warn_thin_cells() -> None:
    table = pl.DataFrame({"e": [0, 1, 2], "n_units": [5, 1, 2]})
    with pytest.warns(SparseCellWarning, match=r"1 event time cell\(s\).*\(e=1: 1\)"):
        warn_thin_cells(table, label="event time")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_thin_cells(table.filter(pl.col("n_units") >= 2), label="event time")


def test_race_unit_panel_years_and_cell_truth() -> None:
    spec = SynthSpec(scenario="dynamic", design="random", n_treated=20, states=("SC",))
    kw = {"seed": 3, "rows": 300_000, "years": (2005, 2012)}
    c = cells(spec, **kw).filter(pl.col("agency") == "state_patrol")
    by_year = race_unit_panel(c)
    monthly = race_unit_panel(c, cohort="period")
    assert by_year.height == monthly.height // 12
    # stops are summed into years, and a county's cohort is the calendar year of its first treated month
    pair = c.filter(pl.col("race").is_in(["hispanic", "white"]))
    tot = pair.group_by("county_fips", (pl.col("period") // 12).alias("period")).agg(pl.col("stops").sum())
    j = by_year.join(tot, on=["county_fips", "period"])
    np.testing.assert_array_equal(j["trials"].to_numpy(), j["stops"].to_numpy())
    firsts = c.group_by("county_fips").agg(pl.col("first_treated").first())
    j2 = by_year.group_by("county_fips").agg(pl.col("first_treated").first()).join(firsts, on="county_fips")
    year = pl.col("first_treated_right") // 12
    expect = pl.when((pl.col("first_treated_right") > 0) & (year <= 2012)).then(year).otherwise(0)
    assert (j2["first_treated"] == j2.select(expect).to_series()).all()
    # cell_truth reproduces truth()'s headline averages
    ct = cell_truth(spec, **kw).filter(pl.col("on"))
    t = truth(spec, **kw)["estimands"]
    w = ct["weight"]
    assert float((w * ct["delta"]).sum() / w.sum()) == pytest.approx(t["att_logodds"], rel=1e-12)
    assert float((w * (ct["share"] - ct["share0"])).sum() / w.sum()) == pytest.approx(
        t["att_share"], rel=1e-12
    )


def test_race_unit_panel_needs_period_length() -> None:
    spec = SynthSpec(scenario="dynamic", design="random", n_treated=20, states=("SC",))
    c = cells(spec, seed=3, rows=300_000, years=(2005, 2008)).filter(pl.col("agency") == "state_patrol")
    with pytest.raises(SpecificationError, match="cohort='year' needs the period length"):
        race_unit_panel(c.drop("period_start"))
    assert race_unit_panel(c.drop("period_start"), period_length="month").height == race_unit_panel(c).height


def test_adoption_after_the_panel_is_never_treated_within_it() -> None:
    spec = SynthSpec(scenario="dynamic", design="random", n_treated=50)
    c = cells(spec, seed=1000, rows=500_000, years=(2005, 2010)).filter(pl.col("agency") == "state_patrol")
    late = c.filter(pl.col("first_treated") > pl.col("period").max()).get_column("county_fips").unique()
    assert late.len() > 0
    p = race_unit_panel(c)
    assert (p.filter(pl.col("county_fips").is_in(late.implode()))["first_treated"] == 0).all()
    assert p["first_treated"].max() <= 2010


def test_varying_weights_use_the_pre_adoption_mean() -> None:
    d = _panel().with_columns((pl.col("n") * 2.0).alias("wt"), pl.col("y").cast(pl.Float64).alias("x"))
    p = prepare_staggered(d, yname="x", idname="id", tname="year", gname="first", weights="wt")
    assert "pre-adoption periods" in p.unit_weight_rule and "varies within 12 units" in p.unit_weight_rule
    w = p.units().select("unit", "w")
    for unit, g in (("c01", 2004), ("c02", 2006), ("c00", 2004)):  # never treated: before the first cohort
        expect = d.filter((pl.col("id") == unit) & (pl.col("year") < g))["wt"].mean()
        assert w.filter(pl.col("unit") == unit)["w"][0] == pytest.approx(expect)


def test_states_with_different_spans_keep_the_common_periods() -> None:
    spec = SynthSpec(scenario="dynamic", design="random", n_treated=20)
    c = cells(spec, seed=5, rows=400_000, years=(2005, 2010)).filter(pl.col("agency") == "state_patrol")
    # SC observed 2005-2010, NC only 2007-2010 (as OPP's states span different years)
    c = c.filter((pl.col("state") == "SC") | (pl.col("period") >= 2007 * 12))
    with pytest.warns(
        DroppedRowsWarning, match=r"kept periods 2007\.\.2010.*dropped \d+ of \d+ unit-periods"
    ):
        p = race_unit_panel(c)
    assert p["period"].unique().sort().to_list() == [2007, 2008, 2009, 2010]
    assert p.group_by("county_fips").len()["len"].unique().to_list() == [4]
