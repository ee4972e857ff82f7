"""The wheel carries queries/ and data/ and works outside the repository.

Builds the wheel, installs it (without dependencies) into a fresh virtual environment whose only
other packages are the test environment's dependencies (made visible through a .pth file, so no
network is needed), and runs `stopdisparity synth` and `ingest` from a directory outside the repo.
"""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.wheel


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, check=False)
    assert proc.returncode == 0, f"{cmd} failed:\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def test_wheel_installs_and_runs_outside_repo(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), str(ROOT)], ROOT)
    wheel = next(dist.glob("stopdisparity-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "stopdisparity/queries/parse_csv_source.sql" in names
    assert "stopdisparity/data/policies/287g_agreements.csv" in names
    assert "stopdisparity/data/geo/county_centroids.csv" in names
    assert "stopdisparity/data/census/county_population_race.csv" in names

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    purelib = _run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path)
    # the test environment's site-packages supply the dependencies, after the wheel's own files
    deps = [p for p in site.getsitepackages() if Path(p).is_dir()]
    (Path(purelib.stdout.strip()) / "zz_test_deps.pth").write_text("\n".join(deps) + "\n")
    _run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", str(wheel)], tmp_path)

    work = tmp_path / "outside"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = _run([str(py), "-c", "import stopdisparity, sys; print(stopdisparity.__file__)"], work, env)
    assert str(env_dir) in where.stdout, "the wheel's package must be imported, not the source tree"

    exe = env_dir / "bin" / "stopdisparity"
    _run([str(exe), "synth", "raw", "--rows", "3000", "--seed", "3", "--quiet"], work, env)
    files = sorted(p.name for p in (work / "raw").glob("*.csv.zip"))
    assert files and all(f.startswith(("nc_statewide_", "sc_statewide_")) for f in files)
    out = _run(
        [
            str(exe),
            "ingest",
            *[str(work / "raw" / f) for f in files],
            "--store",
            "store",
            "--json",
            "--quiet",
        ],
        work,
        env,
    )
    report = json.loads(out.stdout)
    assert report["rows_read"] == 3000
    assert report["rows_read"] == report["rows_stored"] + report["rows_quarantined"]
    assert {f["status"] for f in report["files"]} == {"ingested"}
