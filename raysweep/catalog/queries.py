"""The SQL library: one named query per `analysis/*.sql` file, installed as DuckDB table macros.

Each file opens with a header:

    -- name: bin_loss                      (must equal the file stem)
    -- description: ...
    -- params: step := 'final'  -- meaning  (or `(none)`)
    -- columns: trial_id, step, ...         (the output columns, in order)

then one query written as named CTEs ending in `final`. Installed as
`CREATE MACRO bin_loss(step := 'final') AS TABLE ...`, so `SELECT * FROM bin_loss()` works in any
DuckDB client. A query may call another; macros are created callees first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

_HEADER = re.compile(r"^--\s*(name|description|params|columns):\s*(.*)$")
_PARAM = re.compile(r"^(\w+)\s*:=\s*('[^']*'|[\w.]+)")


class QueryError(ValueError):
    """A malformed query file; the message names the file."""


@dataclass(frozen=True)
class Query:
    name: str
    description: str
    params: tuple[tuple[str, str], ...]  # (name, default SQL literal)
    columns: tuple[str, ...]
    body: str

    def create_sql(self) -> str:
        signature = ", ".join(f"{p} := {default}" for p, default in self.params)
        return f"CREATE OR REPLACE MACRO {self.name}({signature}) AS TABLE\n{self.body}"

    def calls(self, names: set[str]) -> set[str]:
        return {n for n in names if n != self.name and re.search(rf"\b{n}\s*\(", self.body)}


def parse_query(text: str, source: str) -> Query:
    header, body_lines = {}, []
    for line in text.splitlines():
        match = _HEADER.match(line.strip())
        if match and not body_lines:
            header[match.group(1)] = match.group(2).strip()
        elif line.strip() or body_lines:
            body_lines.append(line)
    missing = [k for k in ("name", "description", "params", "columns") if k not in header]
    if missing:
        raise QueryError(f"{source}: header lacks {', '.join(f'-- {k}:' for k in missing)}")
    if header["name"] != Path(source).stem:
        raise QueryError(f"{source}: -- name: {header['name']!r} must equal the file name "
                         f"{Path(source).stem!r}")
    params = []
    if header["params"] != "(none)":
        for declared in header["params"].split("--")[0].split(","):
            match = _PARAM.match(declared.strip())
            if not match:
                raise QueryError(f"{source}: -- params: {declared.strip()!r} is not `name := default`")
            params.append((match.group(1), match.group(2)))
    body = "\n".join(body_lines).strip().rstrip(";")
    for name, _ in params:
        if not re.search(rf"(?<![\w.]){name}\b", body):
            raise QueryError(f"{source}: parameter {name!r} is declared but never used")
    if not re.search(r"\bfinal\s+AS\s*\(", body, re.IGNORECASE):
        raise QueryError(f"{source}: the query must end in a CTE named `final`")
    columns = tuple(c.strip() for c in header["columns"].split(","))
    return Query(header["name"], header["description"], tuple(params), columns, body)


def load_queries(directory: Path | None = None) -> list[Query]:
    """Every query of the library (default: the one shipped in the wheel), callees first."""
    if directory is None:
        files = [f for f in resources.files("raysweep.analysis").iterdir() if f.name.endswith(".sql")]
    else:
        files = list(Path(directory).glob("*.sql"))
    queries = {q.name: q for q in (parse_query(f.read_text(), f.name) for f in files)}
    ordered, seen = [], set()

    def visit(query: Query, path: tuple[str, ...]) -> None:
        if query.name in seen:
            return
        if query.name in path:
            raise QueryError(f"{query.name}.sql: calls itself through {' -> '.join(path)}")
        for callee in sorted(query.calls(set(queries))):
            visit(queries[callee], path + (query.name,))
        seen.add(query.name)
        ordered.append(query)

    for name in sorted(queries):
        visit(queries[name], ())
    return ordered


def query_with_callees(name: str) -> list[Query]:
    """A query and every query it calls, callees first: all that a connection holding only some of
    the catalog's views (macros bind their tables when created) needs to run it."""
    queries = load_queries()
    by_name = {q.name: q for q in queries}
    needed, todo = set(), [name]
    while todo:
        current = todo.pop()
        if current not in needed:
            needed.add(current)
            todo += by_name[current].calls(set(by_name))
    return [q for q in queries if q.name in needed]


def install_queries(con, queries: list[Query] | None = None) -> None:
    """Create every query as a table macro on a DuckDB connection."""
    for query in queries if queries is not None else load_queries():
        con.execute(query.create_sql())
