"""Regenerate medicaid.json / medicaid_controls.json / sunab.json from the HonestDiD repository.

Needs a scratch environment with ``rdata`` (R serialization reader), ``numpy``, ``pandas`` and, for the
Medicaid betahat/sigma, the project's pyfixest:

    python3 -m venv /tmp/rd && /tmp/rd/bin/pip install rdata numpy pandas
    git clone https://github.com/asheshrambachan/HonestDiD /tmp/HonestDiD
    /tmp/rd/bin/python extract_readme_cache.py /tmp/HonestDiD /tmp/cache.json /tmp/df_nonstaggered.csv

The README's knitr cache (README_cache/gfm/unnamed-chunk-<k>_<hash>.rdb/.rdx) is an R lazy-load
database: the .rdx is a gzip-compressed serialized index {variables: name -> (offset, length)}; each
object in the .rdb is a 4-byte length followed by a zlib stream of R's serialization. The JSON files in
this directory were then assembled from cache.json by hand-written code (see SOURCE.md for the field
meanings); medicaid.json's betahat/sigma come from pyfixest on df_nonstaggered.csv (SOURCE.md).
"""

from __future__ import annotations

import json
import sys
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import rdata

warnings.filterwarnings("ignore")


def get(cache_dir: str, chunk: int, name: str) -> Any:
    rdx = str(next(Path(cache_dir).glob(f"unnamed-chunk-{chunk}_*.rdx")))
    idx = rdata.conversion.convert(rdata.parser.parse_file(rdx))
    off, ln = idx["variables"][name]
    raw = Path(rdx[:-4] + ".rdb").read_bytes()[int(off) : int(off) + int(ln)]
    return rdata.conversion.convert(rdata.parser.parse_data(zlib.decompress(raw[4:]), extension=".rds"))


def main(repo: str, out_json: str, out_csv: str) -> None:
    cache = f"{repo}/README_cache/gfm"
    out: dict = {}
    for c, n in [
        (4, "delta_rm_results"),
        (5, "delta_rm_results"),
        (6, "delta_sd_results"),
        (7, "delta_rm_results_avg"),
        (10, "sensitivity_results"),
    ]:
        v = get(cache, c, n)
        out[f"chunk{c}:{n}"] = {k: [x.item() if hasattr(x, "item") else x for x in v[k]] for k in v.columns}
    out["chunk8:betahat"] = np.asarray(get(cache, 8, "betahat")).tolist()
    out["chunk8:sigma"] = np.asarray(get(cache, 8, "sigma")).tolist()
    bv = get(cache, 10, "beta_vcv")
    out["chunk10:beta"] = np.asarray(bv["beta"]).ravel().tolist()
    out["chunk10:sigma"] = np.asarray(bv["sigma"]).tolist()
    out["chunk10:cohorts"] = np.asarray(bv["cohorts"]).tolist()
    Path(out_json).write_text(json.dumps(out, indent=1))
    get(cache, 8, "df_nonstaggered").to_csv(out_csv, index=False)


if __name__ == "__main__":
    main(*sys.argv[1:4])
