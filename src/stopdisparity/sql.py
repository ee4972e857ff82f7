"""The one place SQL runs: load ``queries/*.sql``, check and bind named parameters, log, wrap errors.

Each ``.sql`` file holds one statement under a comment header::

    -- purpose: what the query does
    -- input: the tables or relations it reads
    -- params: $state VARCHAR, $year INTEGER
    -- fragments: select_list
    -- grain: one row per state x year x subject_race

Values are bound as DuckDB named parameters (``$name``), never pasted into the text. A *fragment*
(``{{select_list}}``) is SQL that a pure builder function assembles from identifiers on the schema's
allow-list (column lists that depend on a file's header); the loader checks that the declared
parameters and fragments are exactly those the text uses.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

import duckdb
import polars as pl

from stopdisparity.errors import QueryError
from stopdisparity.resources import queries_dir

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger(__name__)

_PARAM = re.compile(r"(?<![\w$])\$([A-Za-z_][A-Za-z0-9_]*)")
_FRAGMENT = re.compile(r"\{\{([A-Za-z_][A-Za-z0-9_]*)\}\}")
_HEADER = re.compile(r"^--\s*(purpose|input|params|fragment params|fragments|grain):\s*(.*)$")
_STRING_OR_COMMENT = re.compile(r"'(?:[^']|'')*'|--[^\n]*")


def _code_only(sql: str) -> str:
    """SQL with string literals emptied and comments removed, in one left-to-right pass."""
    return _STRING_OR_COMMENT.sub(lambda m: "''" if m.group(0).startswith("'") else "", sql)


@dataclass(frozen=True, slots=True)
class Query:
    """A parsed ``.sql`` file: its text, declared parameters and fragments, and header notes."""

    name: str
    text: str
    params: frozenset[str]
    fragment_params: frozenset[str]
    fragments: frozenset[str]
    purpose: str
    grain: str

    def render(self, fragments: Mapping[str, str] | None = None) -> str:
        """The SQL with fragments filled in (fragments come from builder functions, not users)."""
        given = dict(fragments or {})
        if set(given) != self.fragments:
            raise QueryError(f"{self.name}.sql needs fragments {sorted(self.fragments)}; got {sorted(given)}")
        return _FRAGMENT.sub(lambda m: given[m.group(1)], self.text)


def parse_query(name: str, text: str) -> Query:
    """Parse and check one query file's text.

    Raises
    ------
    QueryError
        If the header lacks purpose/params/grain, or the declared parameters or fragments differ from
        those used in the statement.
    """
    header: dict[str, str] = {}
    body: list[str] = []
    last_key = None
    for line in text.splitlines():
        stripped = line.strip()
        if not body and stripped.startswith("--"):
            m = _HEADER.match(stripped)
            if m:
                last_key = m.group(1)
                header[last_key] = m.group(2).strip()
            elif last_key is not None:  # continuation of the previous header entry
                header[last_key] += " " + stripped.lstrip("-").strip()
        elif stripped or body:
            body.append(line)
    for key in ("purpose", "params", "grain"):
        if key not in header:
            raise QueryError(f"{name}.sql: header lacks '-- {key}:'")
    declared = set(_PARAM.findall(header["params"]))
    fragment_params = set(_PARAM.findall(header.get("fragment params", "")))
    declared_fragments = {f.strip() for f in header.get("fragments", "").split(",") if f.strip()}
    sql = "\n".join(body).strip()
    code = _code_only(sql)
    used = set(_PARAM.findall(code))
    used_fragments = set(_FRAGMENT.findall(code))
    if declared != used:
        raise QueryError(
            f"{name}.sql: declared parameters {sorted(declared)} but the statement uses {sorted(used)}"
        )
    if declared_fragments != used_fragments:
        raise QueryError(
            f"{name}.sql: declared fragments {sorted(declared_fragments)} but the statement uses "
            f"{sorted(used_fragments)}"
        )
    return Query(
        name=name,
        text=sql.rstrip(";"),
        params=frozenset(declared),
        fragment_params=frozenset(fragment_params),
        fragments=frozenset(declared_fragments),
        purpose=header["purpose"],
        grain=header["grain"],
    )


@cache
def load_query(name: str) -> Query:
    """Load ``queries/{name}.sql``."""
    path = queries_dir() / f"{name}.sql"
    if not path.is_file():
        known = sorted(p.stem for p in queries_dir().glob("*.sql"))
        raise QueryError(f"no query named {name!r}; known queries: {known}")
    return parse_query(name, path.read_text(encoding="utf-8"))


def prepare(
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    fragments: Mapping[str, str] | None = None,
) -> tuple[str, dict[str, Any]]:
    """Render a named query and check that the bound parameters are exactly those it uses."""
    query = load_query(name)
    bound = dict(params or {})
    sql = query.render(fragments)
    used = set(_PARAM.findall(_code_only(sql)))
    undeclared = used - query.params - query.fragment_params
    missing, extra = used - set(bound), set(bound) - used
    if undeclared or missing or extra:
        raise QueryError(
            f"{name}.sql takes parameters {sorted(query.params | query.fragment_params)}; this call "
            f"uses {sorted(used)}: missing {sorted(missing)}, unexpected {sorted(extra)}, "
            f"undeclared {sorted(undeclared)}"
        )
    log.debug("query %s params=%s", name, _short(bound))
    log.log(5, "query %s sql=\n%s", name, sql)
    return sql, bound


def run_query(
    con: duckdb.DuckDBPyConnection,
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    fragments: Mapping[str, str] | None = None,
) -> duckdb.DuckDBPyConnection:
    """Run a named query with bound parameters; the chokepoint every SQL statement goes through.

    Returns the connection, from which the caller may fetch rows (``fetchall``, ``fetchone``).

    Raises
    ------
    QueryError
        Naming the ``.sql`` file and the bound parameters, for wrong parameters or a DuckDB error.
    """
    sql, bound = prepare(name, params, fragments=fragments)
    started = time.perf_counter()
    try:
        result = con.execute(sql, bound) if bound else con.execute(sql)
    except duckdb.Error as e:
        raise _failed(name, bound, e) from e
    log.debug("query %s took %.2f s", name, time.perf_counter() - started)
    return result


def query_frame(
    con: duckdb.DuckDBPyConnection,
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    fragments: Mapping[str, str] | None = None,
) -> pl.DataFrame:
    """Run a named (SELECT) query and return its rows as a polars frame."""
    sql, bound = prepare(name, params, fragments=fragments)
    try:
        return con.sql(sql, params=bound or None).pl()
    except duckdb.Error as e:
        raise _failed(name, bound, e) from e


def stream_query(
    con: duckdb.DuckDBPyConnection,
    name: str,
    params: Mapping[str, Any] | None = None,
    *,
    fragments: Mapping[str, str] | None = None,
    batch_rows: int = 122_880,
) -> Iterator[pa.RecordBatch]:
    """Run a named (SELECT) query and yield its rows as Arrow record batches, in the query's order.

    The rows are produced while they are consumed, so a result larger than memory streams through.
    An engine error, when the query starts or midway, is raised as :class:`QueryError` from it (midway,
    DuckDB's error reaches Python through the Arrow stream as an ``OSError``).
    """
    import pyarrow as pa

    sql, bound = prepare(name, params, fragments=fragments)
    started = time.perf_counter()
    try:
        reader = con.sql(sql, params=bound or None).to_arrow_reader(batch_rows)
    except duckdb.Error as e:
        raise _failed(name, bound, e) from e
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            break
        except (duckdb.Error, pa.ArrowException, OSError) as e:
            raise _failed(name, bound, e) from e
        yield batch
    log.debug("query %s took %.2f s", name, time.perf_counter() - started)


def _failed(name: str, bound: Mapping[str, Any], error: Exception) -> QueryError:
    """The error a query's engine failure is raised as: the ``.sql`` file, its parameters, the cause."""
    return QueryError(f"{name}.sql failed with parameters {_short(bound)}: {error}")


def _short(params: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in params.items():
        text = repr(v)
        out[k] = v if len(text) <= 200 else text[:200] + "..."
    return out
