"""Write csdid_reference.json: the csdid package's (Python port of R did) numbers on mpdta.

Run with a scratch environment that has csdid installed (it is not a project dependency):

    python3 -m venv /tmp/csvenv && /tmp/csvenv/bin/pip install csdid
    /tmp/csvenv/bin/python tests/reference/did_mpdta/make_reference.py

For each configuration (outcome regression ``est_method="reg"`` unless the name ends in ``_dr``, the
doubly robust ``"dr"``): every ATT(g,t) with its analytical SE (``bstrap=False``) and the simple,
dynamic, group and calendar aggregations (``aggte(..., bstrap=False)``) with their analytical SEs.
"""

from __future__ import annotations

import datetime
import json
import platform
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pandas as pd
from csdid.att_gt import ATTgt

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "mpdta" / "mpdta.csv"

CONFIGS: dict[str, dict] = {
    "never_varying": {},
    "notyet_varying": {"control_group": "notyettreated"},
    "never_universal": {"base_period": "universal"},
    "notyet_universal": {"control_group": "notyettreated", "base_period": "universal"},
    "never_varying_lpop": {"xformla": "lemp ~ lpop"},
    "notyet_varying_lpop": {"xformla": "lemp ~ lpop", "control_group": "notyettreated"},
    "never_varying_anticipation1": {"anticipation": 1},
    "notyet_universal_anticipation1": {
        "anticipation": 1,
        "control_group": "notyettreated",
        "base_period": "universal",
    },
    "never_varying_weights_lpop": {"weights_name": "lpop"},
    "notyet_varying_treated_only": {"control_group": "notyettreated", "data": "treated_only"},
    "never_varying_xtv": {"xformla": "lemp ~ xtv"},
    "never_varying_lpop_dr": {"xformla": "lemp ~ lpop", "est_method": "dr"},
    "notyet_universal_lpop_dr": {
        "xformla": "lemp ~ lpop",
        "est_method": "dr",
        "control_group": "notyettreated",
        "base_period": "universal",
    },
    "never_varying_weights_lpop_lpop_dr": {
        "xformla": "lemp ~ lpop",
        "est_method": "dr",
        "weights_name": "lpop_w",
    },
}
AGGTE: dict[str, dict] = {
    "simple": {"typec": "simple"},
    "dynamic": {"typec": "dynamic"},
    "group": {"typec": "group"},
    "calendar": {"typec": "calendar"},
    "dynamic_balance1": {"typec": "dynamic", "balance_e": 1},
    "dynamic_min-2_max1": {"typec": "dynamic", "min_e": -2, "max_e": 1},
}


def _f(x: object) -> float | None:
    v = float(np.asarray(x, dtype=float))
    return v if np.isfinite(v) else None


def main() -> None:
    data = pd.read_csv(DATA)
    # a copy of lpop as the weights column: csdid 0.4.3 fails when one column is both weight and covariate
    data["lpop_w"] = data["lpop"]
    # a deterministic time-varying covariate: R did (and csdid) use its value in the earlier period of a pair
    data["xtv"] = data["lpop"] + 0.1 * np.sin(data["countyreal"] * 0.37 + data["year"] * 1.3)
    out: dict = {
        "source": "csdid (Python port of R did by d2cml-ai), analytical SEs (bstrap=False)",
        "csdid_version": version("csdid"),
        "drdid_version": version("drdid"),
        "numpy_version": np.__version__,
        "pandas_version": pd.__version__,
        "python_version": platform.python_version(),
        "generated": datetime.date.today().isoformat(),
        "data": "tests/reference/mpdta/mpdta.csv",
        "configs": {},
    }
    for name, cfg in CONFIGS.items():
        cfg = dict(cfg)
        base = cfg.pop("base_period", "varying")
        method = cfg.pop("est_method", "reg")
        subset = cfg.pop("data", None)
        dat = data[data["first.treat"] > 0].reset_index(drop=True) if subset == "treated_only" else data
        kw = {"control_group": cfg.pop("control_group", "nevertreated"), **cfg}
        call = (
            f"ATTgt(yname='lemp', gname='first.treat', idname='countyreal', tname='year', "
            f"data={'mpdta[mpdta.first_treat > 0]' if subset else 'mpdta'}, "
            f"{', '.join(f'{k}={v!r}' for k, v in kw.items())}).fit(est_method={method!r}, "
            f"base_period={base!r}, bstrap=False)"
        )
        att = ATTgt(yname="lemp", gname="first.treat", idname="countyreal", tname="year", data=dat, **kw).fit(
            est_method=method, base_period=base, bstrap=False
        )
        d = att.did_object  # group, t, att and the analytical se of every ATT(g,t)
        gt = [
            {"g": int(g), "t": int(t), "estimate": _f(a), "std_error": _f(s)}
            for g, t, a, s in zip(d["group"], d["t"], d["att"], d["se"], strict=True)
        ]
        aggs = {}
        for aname, acfg in AGGTE.items():
            a = att.aggte(bstrap=False, **acfg).atte
            egt = a.get("egt")
            aggs[aname] = {
                "call": f"aggte({', '.join(f'{k}={v!r}' for k, v in acfg.items())}, bstrap=False)",
                "overall_att": _f(a["overall_att"]),
                "overall_se": _f(a["overall_se"]),
                "egt": None if egt is None else [int(e) for e in np.atleast_1d(egt)],
                "att_egt": None if a.get("att_egt") is None else [_f(v) for v in np.atleast_1d(a["att_egt"])],
                "se_egt": None if a.get("se_egt") is None else [_f(v) for v in np.atleast_1d(a["se_egt"])],
            }
        pre = {"W": _f(att.MP["W"]), "Wpval": _f(att.MP["Wpval"])}
        out["configs"][name] = {"call": call, "att_gt": gt, "aggte": aggs, "pretest": pre}
        print(name, "done", file=sys.stderr)
    (HERE / "csdid_reference.json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
