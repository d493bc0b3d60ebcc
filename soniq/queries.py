"""The named queries of ``sql/*.sql``: parsed, fragments filled in, loaded per schema.

Each file holds ``-- name: X`` blocks; ``{_name}`` inside a query includes the fragment
``_name`` (from any file); ``{schema}`` is the quoted schema name. Only ``soniq.db`` runs them.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable
from functools import cache
from importlib import resources


def parse_queries(text: str, source: str = "<text>") -> dict[str, str]:
    """The ``-- name: X`` blocks of one file, comment lines dropped, fragments not yet filled
    in; a name defined twice raises ValueError."""
    out: dict[str, str] = {}
    for block in re.split(r"^-- name: ", text, flags=re.M)[1:]:
        name, _, body = block.partition("\n")
        name = name.strip()
        if name in out:
            raise ValueError(f"query {name!r} is defined twice in {source}")
        lines = [ln for ln in body.splitlines() if not ln.lstrip().startswith("--")]
        out[name] = "\n".join(lines).strip()
    return out


def merge_queries(files: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The queries of (file name, text) pairs with ``{_name}`` filled in by the fragment
    ``_name`` of any file (also inside fragments); fragments themselves left out. A name
    defined twice, in one file or two, raises ValueError."""
    out: dict[str, str] = {}
    where: dict[str, str] = {}
    for source, text in files:
        for name, sql in parse_queries(text, source).items():
            if name in out:
                raise ValueError(f"query {name!r} is defined twice: in {where[name]} and {source}")
            out[name] = sql
            where[name] = source
    fragments = {k: v for k, v in out.items() if k.startswith("_")}
    for name, sql in out.items():
        for _ in range(4):  # fragments may include fragments, in any order
            for frag, frag_sql in fragments.items():
                sql = sql.replace("{" + frag + "}", frag_sql)
        out[name] = sql
    return {k: v for k, v in out.items() if not k.startswith("_")}


@cache
def _raw_queries() -> dict[str, str]:
    """Every ``sql/*.sql`` file's queries (not ``sql/migrations/``), files in name order."""
    folder = resources.files("soniq").joinpath("sql")
    files = sorted(
        (f.name, f.read_text(encoding="utf-8")) for f in folder.iterdir() if f.name.endswith(".sql")
    )
    return merge_queries(files)


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def load_queries(schema: str) -> dict[str, str]:
    """All named queries with ``{schema}`` filled in."""
    return {name: query(name, schema) for name in _raw_queries()}


def query(name: str, schema: str | None = None) -> str:
    """Query ``name``, with ``{schema}`` filled in when ``schema`` is given (a query that
    names no schema, or one run before any ``Database`` exists)."""
    sql = _raw_queries()[name]
    return sql if schema is None else sql.replace("{schema}", quote_ident(schema))


def advisory_key(schema: str, purpose: str) -> int:
    """A stable 63-bit advisory lock key for ``purpose`` in ``schema``."""
    digest = zlib.crc32(f"soniq:{schema}:{purpose}".encode())
    return (digest << 16) | 0x50C1  # distinct from small integer keys users pick
