"""Stop-level draws written as OPP statewide files (``*.csv.zip``), in chunks with bounded memory.

The county x month x agency x race counts come from :func:`.plan.draw_cells`, the same draw
:func:`stopdisparity.synth.cells` makes. Each month's stops are those counts expanded; from that month's
keyed random stream every stop gets a day and time, the month is sorted by date and time, and the
remaining attributes are drawn. Months are grouped into
chunks of about :data:`CHUNK_ROWS` rows; a chunk becomes a polars frame whose columns are
dictionary-coded (``Enum``) pre-rendered CSV fragments, so writing it is a lookup, and the CSV text is
deflated into the zip member by a second thread while the next chunk is drawn.

Output text follows the OPP releases: header first, LF line ends, UTF-8, ``NA`` for missing,
``TRUE``/``FALSE``, ``YYYY-MM-DD``, ``HH:MM:SS``, integers as plain digits, and a field quoted only when
it holds a comma or a quote.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import zipfile
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path
from typing import Final

import numpy as np
import polars as pl

from stopdisparity.errors import StopDisparityError
from stopdisparity.schema import CANONICAL_COLUMNS, SEARCH_BASES
from stopdisparity.synth.plan import (
    AGENCIES,
    DGP_RACES,
    POLICE_DEPARTMENTS,
    RECORDED_RACES,
    SP,
    StatePlan,
    days_in_month,
    draw_cells,
    month_rng,
    month_start,
    rng_for,
)

#: Rows per chunk (memory bound: a chunk's frame and CSV text, plus one chunk being compressed).
CHUNK_ROWS: Final = 500_000
#: zlib level of the zip member: 1, the fastest (deflate is the bottleneck at 20M rows); level 6 is
#: several times slower for files about a quarter smaller.
COMPRESS_LEVEL: Final = 1
_STREAM_OFFICERS: Final = 20
_EPOCH: Final = date(1970, 1, 1)

# --- per-stop attribute model (documented in the package docstring) --------------------------------
HOUR_WEIGHTS: Final = np.array(
    [3, 2, 1.5, 1, 1, 1.5, 3, 5, 6, 6, 6, 6, 6, 6, 6, 6, 6, 6, 5, 5, 5, 4, 4, 3.5], dtype=float
)
AGE_NA: Final = 0.004
SEX_NA: Final = 0.002
MALE_P: Final = np.array([0.62, 0.62, 0.75, 0.64, 0.66])  # by true race
SEARCH_P: Final = np.array([0.015, 0.045, 0.050, 0.025, 0.030])  # state patrol, by true race
SEARCH_AGENCY_MULT: Final = np.array([1.0, 1.5, 1.8])
HIT_P: Final = np.array([0.25, 0.27, 0.21, 0.31, 0.27])  # contraband found | searched, by race
ARREST_P: Final = np.array([0.015, 0.025, 0.035, 0.020, 0.025])  # + 0.35 if found, + 0.03 if searched
CITATION_P: Final = np.array([0.62, 0.50, 0.50])  # by agency
PEDESTRIAN_P: Final = np.array([0.001, 0.004, 0.010])  # by agency (NC only)
BASIS_P: Final = np.array([0.08, 0.12, 0.30, 0.40, 0.06, 0.04])  # SEARCH_BASES, then NA
CONTRABAND_KINDS: Final = ((True, False), (False, True), (True, True), (False, False))  # (drugs, weapons)
CONTRABAND_KIND_P: Final = np.array([0.70, 0.15, 0.05, 0.10])
OFFICERS_PER_AGENCY: Final = (15, 8, 25)
OFFICER_RACE_P: Final = np.array([0.01, 0.20, 0.02, 0.75, 0.02])
VARIANT_UPPER_P: Final = 0.10  # county written "<NAME>"
VARIANT_MC_SPACE_P: Final = 0.25  # "Mc Dowell County" for the Mc counties

NC_REASONS: Final = (
    ("Speed Limit Violation", 0.42),
    ("Vehicle Regulatory Violation", 0.16),
    ("Seat Belt Violation", 0.08),
    ("Safe Movement Violation", 0.07),
    ("Vehicle Equipment Violation", 0.07),
    ("Stop Light/Sign Violation", 0.05),
    ("Driving While Impaired", 0.03),
    ("Investigation", 0.05),
    ("Checkpoint", 0.04),
    ("Other Motor Vehicle Violation", 0.03),
)
NC_ACTIONS: Final = (
    "On-View Arrest",
    "Citation Issued",
    "Written Warning",
    "Verbal Warning",
    "No Action Taken",
)
NC_RAW_RACE: Final = (
    ("N", "A"),
    ("N", "B"),
    ("H", "W"),
    ("N", "W"),
    ("N", "I"),
    ("U", "U"),
)  # Ethnicity, Race
SC_VIOLATIONS: Final = (
    ("Speeding, 10 MPH or less over limit", "Speeding", 0.22),
    ("Speeding, 10-15 MPH over limit", "Speeding", 0.20),
    ("Speeding, more than 15 MPH over limit", "Speeding", 0.08),
    ("Seat belt violation", "Seatbelt", 0.10),
    ("Driving under suspension, 1st offense", "License/Registration", 0.05),
    ("Failure to register vehicle", "License/Registration", 0.06),
    ("Improper lane change", "Traffic Control/Lane", 0.08),
    ("Disregarding traffic signal", "Traffic Control/Lane", 0.06),
    ("Defective equipment", "Equipment", 0.08),
    ("Driving under the influence, 1st offense", "DUI", 0.03),
    ("Other", "Other", 0.04),
)
SC_RAW_RACE: Final = ("A", "B", "H", "W", "I", "U")
SC_DISPOSITIONS: Final = ("Arrest", "Citation", "Warning", "None")
SC_HIGHWAYS: Final = (
    "I-20",
    "I-26",
    "I-77",
    "I-85",
    "I-95",
    "US-1",
    "US-17",
    "US-21",
    "US-52",
    "US-76",
    "SC-9",
)
SC_LOCATION_NA: Final = 0.15
SC_COORD_JITTER: Final = 0.08  # degrees, around the county centroid


@dataclass(frozen=True, slots=True)
class FileLayout:
    """Name, window and column set of one OPP statewide file."""

    state: str
    stem: str
    start: date
    end: date
    has_time: bool
    state_patrol: str


LAYOUTS: Final = {
    "NC": FileLayout(
        "NC", "nc_statewide_2020_04_01", date(2000, 1, 1), date(2015, 12, 31), True, "NC State Highway Patrol"
    ),
    "SC": FileLayout(
        "SC", "sc_statewide_2019_02_25", date(2005, 1, 1), date(2016, 12, 31), False, "SC Highway Patrol"
    ),
}


def csv_field(value: str | None) -> str:
    """One field as OPP writes it: ``NA`` for missing, quoted only when it holds a comma or quote."""
    if value is None:
        return "NA"
    if any(ch in value for ch in ',"\n\r'):
        return '"' + value.replace('"', '""') + '"'
    return value


def _tf(value: bool | None) -> str | None:
    return None if value is None else ("TRUE" if value else "FALSE")


def _cdf(p: Sequence[float] | np.ndarray) -> np.ndarray:
    c = np.cumsum(np.asarray(p, dtype=float))
    return c / c[-1]


def _pick(cdf: np.ndarray, u: np.ndarray) -> np.ndarray:
    return np.searchsorted(cdf, u, side="right").astype(np.int64)


@dataclass(frozen=True, slots=True)
class Piece:
    """A run of adjacent output columns rendered together from one integer code per stop."""

    key: str
    columns: tuple[str, ...]
    kind: str  # "enum", "int", "date", "float"
    pool: pl.Series | None = None
    remap: np.ndarray | None = None


def _enum_piece(key: str, columns: tuple[str, ...], rows: Sequence[Sequence[str | None]]) -> Piece:
    """Piece whose code ``i`` renders as the CSV fragment of ``rows[i]`` (duplicates share a category)."""
    text = [",".join(csv_field(v) for v in row) for row in rows]
    uniq, inverse = np.unique(np.array(text, dtype=object), return_inverse=True)
    cats = [str(u) for u in uniq]
    return Piece(key, columns, "enum", pl.Series(key, cats, dtype=pl.Enum(cats)), inverse.astype(np.uint32))


def _county_text(name: str, variant: int) -> str:
    if variant == 1:
        return name.upper()
    if variant == 2 and name.startswith("Mc"):
        return f"Mc {name[2:]} County"
    return f"{name} County"


def _districts(plan: StatePlan) -> list[str]:
    """Synthetic patrol districts: troops A-H by longitude (east to west), numbers 1-5 by latitude."""
    order = np.argsort(-plan.lng, kind="stable")
    troop = np.empty(len(order), dtype=int)
    troop[order] = np.arange(len(order)) * 8 // len(order)
    out = []
    for i in range(len(order)):
        same = np.flatnonzero(troop == troop[i])
        rank = int(np.sum(plan.lat[same] < plan.lat[i]))
        out.append(f"{'ABCDEFGH'[troop[i]]}{1 + rank % 5}")
    return out


def _outcome_rows(frisk: bool, person: bool) -> tuple[tuple[str, ...], list[list[str | None]], int]:
    pv = [(True, False), (False, True), (True, True)] if person else [(None, True), (None, False)]
    states: list[tuple] = [(None,)]
    for kind in range(5):
        for p in pv:
            for basis in (*SEARCH_BASES, None):
                states.append((kind, p, basis))
    rows = []
    for arrest, citation, warning in itertools.product((False, True), repeat=3):
        outcome = "arrest" if arrest else "citation" if citation else "warning" if warning else None
        for s in states:
            for fr in (False, True) if frisk else (None,):
                if s == (None,):
                    found = drugs = weapons = sp_ = sv = basis = None
                    searched = False
                else:
                    kind, (sp_, sv), basis = s
                    searched = True
                    found = kind > 0
                    drugs, weapons = CONTRABAND_KINDS[kind - 1] if found else (False, False)
                row = [
                    _tf(arrest),
                    _tf(citation),
                    _tf(warning),
                    outcome,
                    _tf(found),
                    _tf(drugs),
                    _tf(weapons),
                ]
                if frisk:
                    row.append(_tf(fr))
                row.append(_tf(searched))
                if person:
                    row.append(_tf(sp_))
                row += [_tf(sv), basis]
                rows.append(row)
    cols = ("arrest_made", "citation_issued", "warning_issued", "outcome", "contraband_found",
            "contraband_drugs", "contraband_weapons", *(("frisk_performed",) if frisk else ()),
            "search_conducted", *(("search_person",) if person else ()), "search_vehicle",
            "search_basis")  # fmt: skip
    return cols, rows, len(states)


@cache
def _static_pieces(nc: bool) -> dict[str, Piece]:
    """Pieces that depend only on the file layout (built once per process)."""
    times = [f"{s // 3600:02d}:{s // 60 % 60:02d}:{s % 60:02d}" for s in range(86400)]
    out = {
        "time": Piece(
            "time",
            ("time",),
            "enum",
            pl.Series("time", [*times, "NA"], dtype=pl.Enum([*times, "NA"])),
            np.arange(86401, dtype=np.uint32),
        ),
        "age": _enum_piece("age", ("subject_age",), [[str(a)] for a in range(16, 91)] + [[None]]),
        "race_sex": _enum_piece(
            "race_sex",
            ("subject_race", "subject_sex"),
            [[r, s] for r in RECORDED_RACES for s in ("male", "female", None)],
        ),
    }
    cols, rows, _ = _outcome_rows(frisk=nc, person=nc)
    out["outcome"] = _enum_piece("outcome", cols, rows)
    if nc:
        tail = [
            [reason, eth, race, action]
            for reason, _ in NC_REASONS
            for eth, race in NC_RAW_RACE
            for action in NC_ACTIONS
        ]
        out["tail"] = _enum_piece(
            "tail", ("reason_for_stop", "raw_Ethnicity", "raw_Race", "raw_action_description"), tail
        )
    else:
        tail = [
            [reason, rr, d] for _, reason, _ in SC_VIOLATIONS for rr in SC_RAW_RACE for d in SC_DISPOSITIONS
        ]
        out["tail"] = _enum_piece("tail", ("reason_for_stop", "raw_Race", "raw_Disposition"), tail)
        out["location"] = _enum_piece("location", ("location",), [[h] for h in SC_HIGHWAYS] + [[None]])
        out["violation"] = _enum_piece("violation", ("violation",), [[v] for v, _, _ in SC_VIOLATIONS])
    return out


class StopRenderer:
    """Draws one state's stops month by month and renders chunks as CSV bytes."""

    def __init__(self, plan: StatePlan, seed: int, spec_time_na: float, spec_coords: float) -> None:
        self.plan = plan
        self.seed = seed
        self.counts = draw_cells(plan, seed)  # [C, T, A, R, masked, county_na]
        self.layout = LAYOUTS[plan.state]
        self.time_na = spec_time_na
        self.coords_share = spec_coords
        c_n = len(plan.fips)
        shape = (c_n, len(AGENCIES), len(RECORDED_RACES) - 1, 2, 2)
        self.cat = np.unravel_index(np.arange(int(np.prod(shape))), shape)
        self.is_mc = np.array([n.startswith("Mc") for n in plan.name])
        self.hour_cdf = _cdf(HOUR_WEIGHTS)
        self.basis_cdf = _cdf(BASIS_P)
        self.kind_cdf = _cdf(CONTRABAND_KIND_P)
        self._officers()
        self.pieces = self._pieces()
        self.header = [c for p in self.pieces for c in p.columns]
        canonical = [c for c in CANONICAL_COLUMNS if c in self.header]
        raw = [c for c in self.header if c not in CANONICAL_COLUMNS]
        if self.header != canonical + raw or not all(c.startswith("raw_") for c in raw):
            raise StopDisparityError(f"internal: {plan.state} columns out of canonical order: {self.header}")

    # -- fixed tables ---------------------------------------------------------------------------------
    def _officers(self) -> None:
        plan = self.plan
        present = plan.agency_share > 0
        counts = np.where(present, np.array(OFFICERS_PER_AGENCY)[None, :], 0)
        self.officer_count = counts
        self.officer_offset = (np.cumsum(counts.ravel()) - counts.ravel()).reshape(counts.shape)
        rng = rng_for(self.seed, _STREAM_OFFICERS, plan.state_index)
        n = int(counts.sum())
        race = _pick(_cdf(OFFICER_RACE_P), rng.random(n))
        male = rng.random(n) < 0.88
        rows = []
        for c, fips in enumerate(plan.fips):
            for a in range(len(AGENCIES)):
                dept, dept_id = self._department(c, a)
                for i in range(int(counts[c, a])):
                    key = f"{self.seed}|{plan.state}|{fips}|{a}|{i}".encode()
                    rows.append((hashlib.blake2b(key, digest_size=5).hexdigest(), dept, dept_id))
        self.officers = rows
        self.officer_race = race
        self.officer_male = male

    def _department(self, c: int, a: int) -> tuple[str, str]:
        fips = self.plan.fips[c]
        if a == SP:
            return self.layout.state_patrol, f"{self.plan.state}HP"
        if a == 1:
            return f"{self.plan.name[c]} County Sheriff's Office", f"{self.plan.state}SO{fips[2:]}"
        return POLICE_DEPARTMENTS.get(fips, "Police Department"), f"{self.plan.state}PD{fips[2:]}"

    def _pieces(self) -> list[Piece]:
        plan, nc = self.plan, self.layout.has_time
        pieces = [Piece("row", ("raw_row_number",), "int"), Piece("date", ("date",), "date")]
        static = _static_pieces(nc)
        if nc:
            pieces.append(static["time"])
            districts = _districts(plan)
            loc = []
            for c, name in enumerate(plan.name):
                for v in range(3):
                    for sp in (False, True):
                        loc.append([None, None, None, _county_text(name, v), districts[c] if sp else None])
                loc += [[None, None, None, None, districts[c]]] * 2
            pieces.append(_enum_piece("loc", ("location", "lat", "lng", "county_name", "district"), loc))
        else:
            pieces.append(static["location"])
            pieces += [Piece("lat", ("lat",), "float"), Piece("lng", ("lng",), "float")]
            county = [[_county_text(name, v)] for name in plan.name for v in range(3)]
            pieces.append(_enum_piece("county", ("county_name",), county))
        pieces += [static["age"], static["race_sex"]]
        if nc:
            off = [[h, dept, t] for h, dept, _ in self.officers for t in ("vehicular", "pedestrian")]
            pieces.append(_enum_piece("officer", ("officer_id_hash", "department_name", "type"), off))
        else:
            off = []
            for i, (h, dept, dept_id) in enumerate(self.officers):
                sex = "male" if self.officer_male[i] else "female"
                off.append([h, DGP_RACES[self.officer_race[i]], sex, dept_id, dept, "vehicular"])
            pieces.append(
                _enum_piece(
                    "officer",
                    (
                        "officer_id_hash",
                        "officer_race",
                        "officer_sex",
                        "department_id",
                        "department_name",
                        "type",
                    ),
                    off,
                )
            )
            pieces.append(static["violation"])
        # not searched, or (5 contraband kinds x person/vehicle combinations x 6 bases)
        self.n_search_states = 1 + 5 * (3 if nc else 2) * (len(SEARCH_BASES) + 1)
        pieces += [static["outcome"], static["tail"]]
        return pieces

    # -- draws ----------------------------------------------------------------------------------------
    def month_codes(self, t: int) -> dict[str, np.ndarray]:
        """Draw month position ``t``'s stops, sorted by date and time, as piece codes."""
        plan = self.plan
        rng = month_rng(self.seed, plan, t)
        counts = self.counts[:, t].ravel()
        n = int(counts.sum())
        k = np.repeat(np.arange(counts.size, dtype=np.int64), counts)
        m = int(plan.months[t])
        day = rng.integers(0, days_in_month(m), n)
        out: dict[str, np.ndarray] = {}
        if self.layout.has_time:
            tsec = _pick(self.hour_cdf, rng.random(n)) * 3600 + rng.integers(0, 3600, n)
            tcode = np.where(rng.random(n) < self.time_na, 86400, tsec)
            key = ((day * 86401 + tcode) << 20) | rng.integers(0, 1 << 20, n)
        else:
            key = (day << 32) | rng.integers(0, 1 << 32, n)
        order = np.argsort(key)
        k, day = k[order], day[order]
        if self.layout.has_time:
            out["time"] = tcode[order]
        c, a, race, masked, cna = (x[k] for x in self.cat)
        rr = np.where(masked == 1, len(RECORDED_RACES) - 1, race)
        out["date"] = (day + (month_start(m) - _EPOCH).days).astype(np.int32)

        u = rng.random((16, n))
        sex = np.where(u[0] < SEX_NA, 2, np.where(u[0] < SEX_NA + (1 - SEX_NA) * MALE_P[race], 0, 1))
        out["race_sex"] = rr * 3 + sex
        age = np.minimum(16 + rng.gamma(2.0, 10.0, n).astype(np.int64), 90)
        out["age"] = np.where(u[1] < AGE_NA, 75, age - 16)
        officer = self.officer_offset[c, a] + (u[2] * self.officer_count[c, a]).astype(np.int64)
        searched = u[3] < SEARCH_P[race] * SEARCH_AGENCY_MULT[a]
        found = searched & (u[4] < HIT_P[race])
        kind = np.where(found, 1 + _pick(self.kind_cdf, u[5]), 0)
        basis = _pick(self.basis_cdf, u[6])
        arrest = u[7] < ARREST_P[race] + 0.35 * found + 0.03 * searched
        citation = u[8] < CITATION_P[a]
        warning = u[9] < np.where(citation, 0.05, 0.30)
        if self.layout.has_time:
            pv = _pick(np.array([0.1, 0.6, 1.0]), u[10])
            frisk = u[11] < 0.01 + 0.30 * searched
            n_pv, n_fr = 3, 2
        else:
            pv = (u[10] >= 0.9).astype(np.int64)
            frisk = np.zeros(n, dtype=bool)
            n_pv, n_fr = 2, 1
        sidx = np.where(searched, 1 + (kind * n_pv + pv) * (len(SEARCH_BASES) + 1) + basis, 0)
        flags = (arrest * 2 + citation) * 2 + warning
        out["outcome"] = (flags * self.n_search_states + sidx) * n_fr + frisk
        variant = np.where(u[12] < VARIANT_UPPER_P, 1, 0)
        variant = np.where(
            self.is_mc[c] & (u[12] >= VARIANT_UPPER_P) & (u[12] < VARIANT_UPPER_P + VARIANT_MC_SPACE_P),
            2,
            variant,
        )
        if self.layout.has_time:
            out["officer"] = officer * 2 + (u[13] < PEDESTRIAN_P[a])
            out["loc"] = c * 8 + np.where(cna == 1, 6, variant * 2 + (a == SP))
            reason = _pick(_cdf([p for _, p in NC_REASONS]), u[14])
            action = np.where(
                arrest, 0, np.where(citation, 1, np.where(warning, np.where(u[15] < 0.5, 2, 3), 4))
            )
            out["tail"] = (reason * len(NC_RAW_RACE) + rr) * len(NC_ACTIONS) + action
        else:
            out["officer"] = officer
            out["county"] = c * 3 + variant
            out["location"] = np.where(
                u[13] < SC_LOCATION_NA, len(SC_HIGHWAYS), (u[14] * len(SC_HIGHWAYS)).astype(np.int64)
            )
            has = u[15] < self.coords_share
            jitter = rng.normal(0.0, SC_COORD_JITTER, (2, n))
            out["lat"] = np.where(has, self.plan.lat[c] + jitter[0], np.nan)
            out["lng"] = np.where(has, self.plan.lng[c] + jitter[1], np.nan)
            viol = _pick(_cdf([p for _, _, p in SC_VIOLATIONS]), rng.random(n))
            out["violation"] = viol
            disp = np.where(arrest, 0, np.where(citation, 1, np.where(warning, 2, 3)))
            out["tail"] = (viol * len(SC_RAW_RACE) + rr) * len(SC_DISPOSITIONS) + disp
        return out

    def render(self, parts: list[dict[str, np.ndarray]], first_row: int) -> bytes | memoryview:
        """CSV text (no header) of the concatenated month draws, numbering rows from ``first_row``."""
        cols: dict[str, pl.Series] = {}
        n = sum(len(p["date"]) for p in parts)
        for piece in self.pieces:
            if piece.kind == "int":
                cols[piece.key] = pl.Series(piece.key, np.arange(first_row, first_row + n, dtype=np.int64))
                continue
            values = np.concatenate([p[piece.key] for p in parts])
            if piece.kind == "date":
                cols[piece.key] = pl.Series(piece.key, values, dtype=pl.Int32).cast(pl.Date)
            elif piece.kind == "float":
                cols[piece.key] = pl.Series(piece.key, values).fill_nan(None)
            else:
                cols[piece.key] = piece.pool.gather(piece.remap[values]).alias(piece.key)
        buf = io.BytesIO()
        pl.DataFrame(cols).write_csv(
            buf, include_header=False, quote_style="never", null_value="NA", float_precision=5,
            date_format="%Y-%m-%d", line_terminator="\n",
        )  # fmt: skip
        return buf.getbuffer()


def write_state_file(
    plan: StatePlan,
    out_dir: Path,
    *,
    seed: int,
    time_na: float,
    coords_share: float,
    advance: Callable[[int], None] | None = None,
) -> dict[str, object]:
    """Write one state's ``*.csv.zip``; return its description for truth.json."""
    renderer = StopRenderer(plan, seed, time_na, coords_share)
    layout = renderer.layout
    final = out_dir / f"{layout.stem}.csv.zip"
    part = out_dir / f"{layout.stem}.csv.zip.part"
    # ZIP64 when the member might pass 2 GiB (rows are < 400 bytes); decided from rows, so deterministic.
    force_zip64 = plan.rows * 400 > 2**31 - 2**24
    written = 0
    zf = zipfile.ZipFile(
        part, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=COMPRESS_LEVEL, allowZip64=True
    )
    with (
        zf,
        zf.open(f"{layout.stem}.csv", "w", force_zip64=force_zip64) as handle,
        ThreadPoolExecutor(1) as pool,
    ):
        pending: deque[Future[int]] = deque()
        handle.write((",".join(renderer.header) + "\n").encode())
        parts: list[dict[str, np.ndarray]] = []
        in_chunk = 0
        months_with_stops = [t for t in range(len(plan.months)) if plan.n[:, t].sum() > 0]
        for i, t in enumerate(months_with_stops):
            parts.append(renderer.month_codes(t))
            in_chunk += len(parts[-1]["date"])
            if in_chunk >= CHUNK_ROWS or i == len(months_with_stops) - 1:
                text = renderer.render(parts, written + 1)
                pending.append(pool.submit(handle.write, text))
                written += in_chunk
                if advance is not None:
                    advance(in_chunk)
                parts, in_chunk = [], 0
                while len(pending) > 1:
                    pending.popleft().result()
        while pending:
            pending.popleft().result()
    part.replace(final)
    if written != plan.rows:
        raise StopDisparityError(f"internal: wrote {written} rows to {final.name}, planned {plan.rows}")
    return {
        "state": plan.state,
        "file": final.name,
        "member": f"{layout.stem}.csv",
        "rows": written,
        "start": layout.start.isoformat(),
        "end": layout.end.isoformat(),
        "columns": renderer.header,
        "bytes": final.stat().st_size,
    }
