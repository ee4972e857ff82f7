"""Locate the files that ship with the package: ``queries/*.sql`` and ``data/``.

In a wheel they sit inside the package (``stopdisparity/queries``, ``stopdisparity/data``) and are
found with :mod:`importlib.resources`; in a source checkout they sit at the repository root.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path

from stopdisparity.errors import StopDisparityError


@cache
def _root(kind: str) -> Path:
    packaged = resources.files("stopdisparity").joinpath(kind)
    if packaged.is_dir():
        return Path(str(packaged))
    checkout = Path(__file__).resolve().parents[2] / kind
    if checkout.is_dir():
        return checkout
    raise StopDisparityError(
        f"cannot find the package's {kind}/ directory (looked in {packaged} and {checkout}); "
        "reinstall stopdisparity"
    )


def queries_dir() -> Path:
    """Directory holding the ``.sql`` files."""
    return _root("queries")


def data_path(*parts: str) -> Path:
    """Path of a shipped data file, e.g. ``data_path("geo", "county_centroids.csv")``."""
    path = _root("data").joinpath(*parts)
    if not path.exists():
        raise StopDisparityError(f"shipped data file {'/'.join(parts)} is missing from {path.parent}")
    return path
