"""Tests of stopdisparity.sql: query files, declared parameters and fragments, binding, errors."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from stopdisparity import sql as sql_module
from stopdisparity.errors import QueryError
from stopdisparity.resources import queries_dir
from stopdisparity.sql import Query, load_query, parse_query, prepare, query_frame, run_query

HEADER = (
    "-- purpose: test\n-- input: none\n-- params: {params}\n-- fragments: {fragments}\n-- grain: one row\n"
)


def q(body: str, params: str = "(none)", fragments: str = "") -> str:
    return HEADER.format(params=params, fragments=fragments) + body


# ---------------------------------------------------------------------------------- parse_query
def test_parse_query_reads_header_and_declarations() -> None:
    query = parse_query(
        "t", q("SELECT {{cols}} FROM t WHERE a = $a AND b = $b;", "$a INTEGER, $b VARCHAR", "cols")
    )
    assert query.params == frozenset({"a", "b"})
    assert query.fragments == frozenset({"cols"})
    assert query.purpose == "test" and query.grain == "one row"
    assert query.text == "SELECT {{cols}} FROM t WHERE a = $a AND b = $b"
    assert query.render({"cols": "x, y"}) == "SELECT x, y FROM t WHERE a = $a AND b = $b"
    with pytest.raises(QueryError, match="fragments"):
        query.render({})
    with pytest.raises(QueryError, match="fragments"):
        query.render({"cols": "x", "other": "y"})


def test_parse_query_rejects_undeclared_param() -> None:
    with pytest.raises(QueryError, match=r"bad\.sql.*declared parameters \['a'\].*uses \['a', 'b'\]"):
        parse_query("bad", q("SELECT * FROM t WHERE a = $a AND b = $b", "$a INTEGER"))


def test_parse_query_rejects_unused_param() -> None:
    with pytest.raises(QueryError, match=r"bad\.sql.*declared parameters \['a', 'b'\].*uses \['a'\]"):
        parse_query("bad", q("SELECT * FROM t WHERE a = $a", "$a INTEGER, $b INTEGER"))


def test_parse_query_rejects_undeclared_and_unused_fragment() -> None:
    with pytest.raises(QueryError, match=r"bad\.sql.*declared fragments \[\].*uses \['cols'\]"):
        parse_query("bad", q("SELECT {{cols}} FROM t"))
    with pytest.raises(QueryError, match=r"declared fragments \['cols', 'more'\]"):
        parse_query("bad", q("SELECT {{cols}} FROM t", fragments="cols, more"))


@pytest.mark.parametrize("key", ["purpose", "params", "grain"])
def test_parse_query_requires_header_keys(key: str) -> None:
    text = "\n".join(line for line in q("SELECT 1").splitlines() if not line.startswith(f"-- {key}:"))
    with pytest.raises(QueryError, match=f"lacks '-- {key}:'"):
        parse_query("bad", text)


def test_parse_query_ignores_dollars_in_strings_and_comments() -> None:
    query = parse_query(
        "ok",
        q("SELECT '$notparam' AS a, 'it''s $x' AS b -- $alsonot\nFROM t WHERE c = $c", "$c INTEGER"),
    )
    assert query.params == frozenset({"c"})


def test_parse_query_allows_apostrophe_in_a_comment() -> None:
    query = parse_query(
        "ok", q("SELECT 1 -- don't count this\nFROM t WHERE a = $a AND b = 'z'", "$a INTEGER")
    )
    assert query.params == frozenset({"a"})


def test_header_continuation_lines_are_joined() -> None:
    text = (
        "-- purpose: first part\n--          second part\n-- params: $a INTEGER,\n--         $b INTEGER\n"
        "-- grain: one row\nSELECT $a + $b"
    )
    query = parse_query("t", text)
    assert query.purpose == "first part second part"
    assert query.params == frozenset({"a", "b"})


def test_every_query_file_parses() -> None:
    files = sorted(queries_dir().glob("*.sql"))
    assert len(files) >= 8
    for path in files:
        query = load_query(path.stem)
        assert query.name == path.stem
        assert query.purpose and query.grain
        assert "{{" not in query.render(dict.fromkeys(query.fragments, "x"))


def test_load_query_unknown_name_lists_known() -> None:
    with pytest.raises(QueryError, match=r"no query named 'nope'.*stage_quarantine"):
        load_query("nope")


# ------------------------------------------------------------------------------------ run_query
@pytest.fixture
def con() -> duckdb.DuckDBPyConnection:
    c = duckdb.connect()
    c.execute("CREATE TABLE stops AS SELECT 'NC' AS state, 2017 AS year, 'white' AS subject_race")
    return c


def test_run_query_binds_and_returns_rows(con: duckdb.DuckDBPyConnection) -> None:
    assert run_query(con, "count_stops_by_state_year_race").fetchall() == [("NC", 2017, "white", 1)]
    table = "(SELECT 'Wake' AS county_name, NULL AS _fail UNION ALL SELECT 'Bad', 3)"
    frame = query_frame(con, "list_county_names", fragments={"table": table})
    assert frame["county_name"].to_list() == ["Wake"]


def test_run_query_rejects_extra_param(con: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(QueryError, match=r"count_stops_by_state_year_race\.sql.*unexpected \['state'\]"):
        run_query(con, "count_stops_by_state_year_race", {"state": "NC"})


FAKE = {
    "by_state": q("SELECT count(*) AS n FROM stops WHERE state = $state", "$state VARCHAR"),
    "checked": (
        "-- purpose: test\n-- params: $header VARCHAR[]\n-- fragment params: $vocabularies MAP\n"
        "-- fragments: cases\n-- grain: one row\nSELECT $header AS h, CASE {{cases}} END AS c"
    ),
    "read_file": q("SELECT * FROM read_parquet($path)", "$path VARCHAR"),
}


@pytest.fixture
def fake_queries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Serve the FAKE query texts by name (real files are looked up as usual)."""
    real = sql_module.load_query

    def load(name: str) -> Query:
        return parse_query(name, FAKE[name]) if name in FAKE else real(name)

    monkeypatch.setattr(sql_module, "load_query", load)


@pytest.mark.usefixtures("fake_queries")
def test_run_query_binds_named_params(con: duckdb.DuckDBPyConnection) -> None:
    assert run_query(con, "by_state", {"state": "NC"}).fetchall() == [(1,)]
    assert run_query(con, "by_state", {"state": "SC"}).fetchall() == [(0,)]
    assert query_frame(con, "by_state", {"state": "NC"})["n"].to_list() == [1]


@pytest.mark.usefixtures("fake_queries")
def test_run_query_rejects_missing_and_extra_params(con: duckdb.DuckDBPyConnection) -> None:
    with pytest.raises(QueryError, match=r"by_state\.sql.*missing \['state'\]"):
        run_query(con, "by_state", {})
    with pytest.raises(QueryError, match=r"by_state\.sql.*unexpected \['year'\]"):
        run_query(con, "by_state", {"state": "NC", "year": 2017})
    with pytest.raises(QueryError, match=r"by_state\.sql.*fragments"):
        run_query(con, "by_state", {"state": "NC"}, fragments={"x": "1"})


@pytest.mark.usefixtures("fake_queries")
def test_fragment_params_must_be_bound_when_the_fragment_uses_them() -> None:
    uses = {"cases": "WHEN $vocabularies['x'][1] = 'y' THEN 1"}
    with pytest.raises(QueryError, match=r"checked\.sql.*missing \['vocabularies'\]"):
        prepare("checked", {"header": ["a"]}, fragments=uses)
    sql, bound = prepare("checked", {"header": ["a"], "vocabularies": {"x": ["y"]}}, fragments=uses)
    assert "$vocabularies" in sql and set(bound) == {"header", "vocabularies"}
    # a fragment that does not use the fragment param must not be given it
    with pytest.raises(QueryError, match=r"unexpected \['vocabularies'\]"):
        prepare("checked", {"header": ["a"], "vocabularies": {}}, fragments={"cases": "WHEN true THEN 1"})
    with pytest.raises(QueryError, match=r"undeclared \['smuggled'\]"):
        prepare("checked", {"header": ["a"], "smuggled": 1}, fragments={"cases": "WHEN $smuggled THEN 1"})


@pytest.mark.usefixtures("fake_queries")
def test_run_query_wraps_duckdb_errors(tmp_path: Path) -> None:
    bare = duckdb.connect()
    with pytest.raises(QueryError, match=r"count_stops_by_state_year_race\.sql failed") as info:
        run_query(bare, "count_stops_by_state_year_race")  # no stops table
    assert isinstance(info.value.__cause__, duckdb.Error)
    missing = str(tmp_path / "missing.parquet")
    with pytest.raises(QueryError, match=r"read_file\.sql failed with parameters .*missing\.parquet"):
        run_query(bare, "read_file", {"path": missing})
    with pytest.raises(QueryError, match=r"read_file\.sql failed"):
        query_frame(bare, "read_file", {"path": missing})
