# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # A first look at a stopdisparity store
#
# Load a store written by `stopdisparity ingest`, check that every input row is accounted for, and
# show stops by race and year. Set `STORE` to your store; by default this notebook uses the store
# `make demo` writes.

# %%
import os
from pathlib import Path

import polars as pl
import stopdisparity as sd

STORE = Path(os.environ.get("STOPDISPARITY_STORE", "demo-output/store"))
store = sd.open_store(STORE)

# %% [markdown]
# ## Reconciliation: read = stored + quarantined, per source

# %%
manifest = store.manifest()
recon = pl.DataFrame(
    [
        {k: v[k] for k in ("rows_read", "rows_stored", "rows_quarantined", "sha256")} | {"source": name}
        for name, v in manifest["sources"].items()
    ]
)
assert (recon["rows_read"] == recon["rows_stored"] + recon["rows_quarantined"]).all()
recon

# %% [markdown]
# ## Why rows were quarantined

# %%
sd.load_quarantine(store).group_by("source_file", "reason", "column").len().sort("len", descending=True)

# %% [markdown]
# ## Stops by race and year (aggregated in DuckDB; only the counts come back)

# %%
counts = sd.stops_by_state_year_race(store)
wide = counts.pivot(on="subject_race", index=["state", "year"], values="stops", sort_columns=True)
wide

# %% [markdown]
# ## Share of stops by race, state patrol only (a LazyFrame: only the needed columns are read)

# %%
shares = (
    sd.load_stops(store)
    .filter(pl.col("department_name").str.contains("Highway Patrol"))
    .group_by("state", "year", "subject_race")
    .agg(pl.len().alias("stops"))
    .with_columns((pl.col("stops") / pl.col("stops").sum().over("state", "year")).alias("share"))
    .sort("state", "year", "subject_race")
    .collect()
)
shares.filter(pl.col("subject_race") == "hispanic")
