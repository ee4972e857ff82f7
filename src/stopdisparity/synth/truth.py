"""The realised true value of each estimand, computed from a plan's probabilities (truth.json).

Estimands (focal race Hispanic, reference White, state-patrol stops, month periods):

- ``att_logodds``: sum over treated county-months of n_ct * delta_ct, divided by sum of n_ct, where
  delta_ct is the planted change in the Hispanic-vs-White log odds (officer effect + composition
  change; the pre-trend is not an effect) and n_ct the expected number of recorded Hispanic + White
  state-patrol stops with a county (expected given the plan: volume draws and shocks are realised).
- ``att_share`` / ``att_pp``: sum of n_ct * (p_ct - p0_ct) over the same cells, divided by sum of n_ct,
  with p_ct = mu_H / (mu_H + mu_W) the Hispanic share among Hispanic + White state-patrol stops and
  p0_ct = expit(logit(p_ct) - delta_ct) the same share without the treatment; ``att_pp`` is 100 times
  ``att_share`` (percentage points).
- ``event_time_years``: the same averages over the cells of treated counties at each event time
  k = floor((month - adoption month) / 12), with delta_ct = 0 where the effect is off (before adoption,
  or after an agreement ended), plus the planted pre-trend offset.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np

from stopdisparity.synth.plan import (
    AGENCIES,
    BASE_RATE,
    COHORT_CENTER,
    DGP_RACES,
    HISP,
    LEVEL_SD,
    POLICE_DEPARTMENTS,
    POLICE_SHARE,
    SP,
    STATE_ROW_WEIGHTS,
    WHITE,
    Plan,
    StatePlan,
)
from stopdisparity.synth.spec import SCENARIOS


def _expit(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def cell_quantities(p: StatePlan) -> dict[str, np.ndarray]:
    """Per county-month weight n, planted delta and shares p, p0 for one state's state-patrol stops."""
    mu_h, mu_w = p.mu[:, :, SP, HISP], p.mu[:, :, SP, WHITE]
    hw = mu_h + mu_w
    lam_total = p.lam.sum()
    weight = p.rows * hw / lam_total * (1.0 - p.unknown_share) * (1.0 - p.county_na_share)
    delta = p.officer_effect + p.composition
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(hw > 0, mu_h / np.where(hw > 0, hw, 1.0), 0.0)
        logit = np.log(np.where(mu_h > 0, mu_h, 1.0)) - np.log(np.where(mu_w > 0, mu_w, 1.0))
    share0 = np.where(hw > 0, _expit(logit - delta), 0.0)
    return {"weight": weight, "delta": delta, "share": share, "share0": share0}


def estimands(plan: Plan) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Month-level ATT truths and per-event-year truths, pooled over the plan's states."""
    w_all, d_all, o_all, c_all, pp_all = [], [], [], [], []
    cells_on = 0
    counties_on: set[str] = set()
    by_k: dict[int, dict[str, Any]] = {}
    for p in plan.states.values():
        q = cell_quantities(p)
        on = p.on & (q["weight"] > 0)
        w = q["weight"][on]
        w_all.append(w)
        d_all.append(q["delta"][on])
        o_all.append(p.officer_effect[on])
        c_all.append(p.composition[on])
        pp_all.append((q["share"] - q["share0"])[on])
        cells_on += int(on.sum())
        counties_on |= {p.fips[i] for i in np.flatnonzero(on.any(axis=1))}
        treated = np.flatnonzero(p.adoption >= 0)
        if treated.size:
            k = (p.months[None, :] - p.adoption[treated, None]) // 12
            wk = q["weight"][treated]
            county = np.broadcast_to(treated[:, None], k.shape)
            for name, values in (
                ("w", wk),
                ("d", wk * q["delta"][treated]),
                ("pp", wk * (q["share"] - q["share0"])[treated]),
                ("pre", wk * p.pretrend[treated]),
            ):
                ks, inv = np.unique(k, return_inverse=True)
                sums = np.bincount(inv.ravel(), weights=values.ravel())
                for kk, v in zip(ks.tolist(), sums.tolist(), strict=True):
                    by_k.setdefault(kk, {"w": 0.0, "d": 0.0, "pp": 0.0, "pre": 0.0, "counties": set()})[
                        name
                    ] += v
            pos = wk > 0
            for kk, c in zip(k[pos].tolist(), county[pos].tolist(), strict=True):
                by_k[kk]["counties"].add(p.fips[c])
    w = np.concatenate(w_all) if w_all else np.zeros(0)
    total = float(w.sum())

    def avg(parts: list[np.ndarray]) -> float | None:
        return float((w * np.concatenate(parts)).sum() / total) if total > 0 else None

    share = avg(pp_all)
    main = {
        "period": "month",
        "focal_race": "hispanic",
        "reference_race": "white",
        "agency": "state_patrol",
        "att_logodds": avg(d_all),
        "att_logodds_officer": avg(o_all),
        "att_logodds_composition": avg(c_all),
        "att_share": share,
        "att_pp": None if share is None else 100.0 * share,
        "treated_county_months": cells_on,
        "treated_counties": len(counties_on),
        "weight": total,
        "definition": (
            "stop-weighted averages over treated (effect on) state-patrol county-months; weight = "
            "expected recorded Hispanic+White state-patrol stops with a county; log odds = planted "
            "officer effect + composition change; share = Hispanic/(Hispanic+White) from the DGP's "
            "probabilities with and without the treatment; att_pp = 100 * att_share"
        ),
    }
    events = []
    for k in sorted(by_k):
        acc = by_k[k]
        wk = acc["w"]
        events.append(
            {
                "event_year": k,
                "att_logodds": acc["d"] / wk if wk > 0 else None,
                "att_pp": 100.0 * acc["pp"] / wk if wk > 0 else None,
                "pretrend_logodds": acc["pre"] / wk if wk > 0 else None,
                "weight": wk,
                "counties": len(acc["counties"]),
            }
        )
    return main, events


def truth_dict(plan: Plan, *, rows: int, files: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Everything planted in a draw, and each estimand's realised true value (JSON-ready)."""
    spec = plan.spec
    try:
        pkg_version = version("stopdisparity")
    except PackageNotFoundError:  # pragma: no cover - source checkout without install
        pkg_version = None
    adoption: dict[str, int | None] = {}
    for p in plan.states.values():
        for i, f in enumerate(p.fips):
            adoption[f] = int(p.adoption[i]) if p.adoption[i] >= 0 else None
    registry = None
    if plan.registry is not None:
        registry = [
            {
                "registry_row": int(r["registry_row"]),
                "state": r["state"],
                "agency": r["agency"],
                "agency_type": r["agency_type"],
                "county_fips": r["county_fips"],
                "model": r["model"],
                "signed": r["signed"].isoformat(),
                "ended": r["ended"].isoformat() if r["ended"] is not None else None,
            }
            for r in plan.registry.iter_rows(named=True)
        ]
    main, events = estimands(plan)
    scenario = SCENARIOS[spec.scenario]
    return {
        "generator": "stopdisparity.synth",
        "package_version": pkg_version,
        "seed": plan.seed,
        "rows": rows,
        "rows_by_state": {s: p.rows for s, p in plan.states.items()},
        "scenario": {"name": scenario.name, "code": scenario.code, "description": scenario.description},
        "spec": spec.to_dict(),
        "files": files or [],
        "treatment": {
            "design": spec.design,
            "exit": spec.exit,
            "period_rule": "a month is treated if an agreement is in force on its first day",
            "effect_agency": "state_patrol",
            "registry_selection": (
                "shipped 287(g) registry rows with a county_fips in a drawn state and a signed date "
                "inside that state's data years (NC 2000-2015, SC 2005-2016); any model, any agency "
                "type; a county is in force while any of its rows is"
                if spec.design == "registry"
                else None
            ),
            "registry_rows": registry,
            "counties": [t.to_dict(adoption.get(t.county_fips)) for t in plan.timing],
        },
        "dgp": {
            "agencies": list(AGENCIES),
            "races": list(DGP_RACES),
            "base_rate": {
                a: dict(zip(DGP_RACES, BASE_RATE[i].tolist(), strict=True)) for i, a in enumerate(AGENCIES)
            },
            "police_departments": dict(POLICE_DEPARTMENTS),
            "police_share": POLICE_SHARE,
            "county_level_sd": LEVEL_SD,
            "cohort_center_year": COHORT_CENTER,
            "state_row_weights": dict(STATE_ROW_WEIGHTS),
            "census_years_used": "2010-2019; other years take the nearest year's shares",
        },
        "estimands": main,
        "event_time_years": events,
    }
