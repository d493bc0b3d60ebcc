"""SQL has one home: the named queries in ``soniq/sql/*.sql``, run only by ``soniq/db.py``;
and the loader refuses a query name defined twice."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from soniq.queries import _raw_queries, merge_queries, parse_queries

SONIQ = Path(__file__).resolve().parents[2] / "soniq"
SQL_START = re.compile(
    r"^(SELECT|INSERT|UPDATE|DELETE|WITH|CREATE|DROP|ALTER|VACUUM|ANALYZE|SET)\s+\S", re.I
)
DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def sql_literals(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every string constant in ``path`` that starts like an SQL statement
    (a keyword and more; docstrings, which may start "Create ..." or "Delete ...", aside)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, DOCUMENTED)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return sorted(
        (node.lineno, node.value.strip())
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
        and SQL_START.match(node.value.strip())
    )


def test_no_sql_outside_db_module() -> None:
    found = {
        str(path.relative_to(SONIQ.parent)): hits
        for path in sorted(SONIQ.rglob("*.py"))
        if path != SONIQ / "db.py" and (hits := sql_literals(path))
    }
    assert found == {}


def test_the_check_sees_sql(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text(
        '"""Create things."""\n'
        'a = "  select 1"\n'
        'b = f"CREATE SCHEMA {a}"\n'
        'c = "selected rows"\n'
        'd = "delete"\n'
        'e = """\n    WITH x AS (SELECT 1) SELECT * FROM x"""\n'
        "def f() -> None:\n"
        '    """Delete old rows."""\n'
    )
    assert [line for line, _ in sql_literals(module)] == [2, 3, 6]


def test_parse_rejects_a_name_defined_twice() -> None:
    text = "-- name: a\nSELECT 1\n\n-- name: b\nSELECT 2\n\n-- name: a\nSELECT 3\n"
    with pytest.raises(ValueError, match=r"'a' is defined twice in x\.sql"):
        parse_queries(text, "x.sql")


def test_merge_rejects_a_name_defined_in_two_files() -> None:
    files = [("a.sql", "-- name: q\nSELECT 1\n"), ("b.sql", "-- name: q\nSELECT 2\n")]
    with pytest.raises(ValueError, match=r"'q' is defined twice: in a\.sql and b\.sql"):
        merge_queries(files)


def test_parse_keeps_names_bodies_and_drops_comments() -> None:
    text = "-- header\n\n-- name: a\n-- what a does\nSELECT 1\n  -- inline\nFROM t\n\n"
    text += "-- name: _f\nx\n"
    assert parse_queries(text) == {"a": "SELECT 1\nFROM t", "_f": "x"}


def test_fragments_fill_in_across_files() -> None:
    files = [("a.sql", "-- name: q\n{_f} FROM t\n"), ("b.sql", "-- name: _f\nSELECT x\n")]
    assert merge_queries(files) == {"q": "SELECT x FROM t"}


def test_every_file_loads_and_fragments_are_filled_in() -> None:
    queries = _raw_queries()
    for name in ("job_insert", "worker_register", "queue_stats", "schedule_upsert", "lock_try"):
        assert name in queries
    assert not any(name.startswith("_") for name in queries)
    assert "{_job_report}" not in queries["job_report"]  # a fragment of jobs.sql
    assert "WITH done AS" in queries["job_report_and_claim"]
