"""The SQL library: one named query per `analysis/*.sql` file, installed as DuckDB macros or run by name.

Each file opens with a header:

    -- name: bin_loss                      (must equal the file stem)
    -- kind: table                         (optional; `table`, `scalar` or `statement`)
    -- description: ...
    -- params: step := 'final'  -- meaning  (or `(none)`)
    -- columns: trial_id, step, ...         (the output columns, in order)

Three kinds:

- `table` (the default): one query written as named CTEs ending in `final`, installed on each
  connection as `CREATE TEMP MACRO bin_loss(step := 'final') AS TABLE ...`, so `SELECT * FROM bin_loss()`
  works in `raysweep sql` and on `raysweep.connect`. Parameters are named, each with a default.
- `scalar`: one expression, installed as `CREATE MACRO freq_bin(c) AS ...`. Parameters are
  positional, without defaults; `-- returns:` (the result's type) replaces `-- columns:`.
- `statement`: statements the catalog build runs once (it creates a table, and DuckDB cannot put
  every statement in a macro), run by `run_statement`. Parameters are required and written `$name`
  in the body; `-- columns:` names the columns of the table it creates.

A query may call another; macros are created callees first. Python runs the library by name:
`run_query(con, "bin_loss", min_occurrences=5)`, `run_statement(con, "create_token_freq", files=[...])`.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

_HEADER = re.compile(r"^--\s*(name|kind|description|params|columns|returns):\s*(.*)$")
_PARAM = re.compile(r"^(\w+)\s*:=\s*('[^']*'|\[[^\]]*\]|[\w.]+)$")
_NAME = re.compile(r"^\w+$")
KINDS = ("table", "scalar", "statement")
# What each kind's header must hold beyond name, description and params
_SHAPE = {"table": "columns", "scalar": "returns", "statement": "columns"}


class QueryError(ValueError):
    """A malformed query file, or a query called by a wrong name or parameter; the message names it."""


@dataclass(frozen=True)
class Query:
    name: str
    description: str
    params: tuple[tuple[str, str | None], ...]  # (name, default SQL literal; None: positional or required)
    columns: tuple[str, ...]  # a table's output columns, a statement's created table's; a scalar's return type
    body: str
    kind: str = "table"

    def create_sql(self, temporary: bool = False) -> str:
        """The CREATE MACRO statement of a table or scalar query (TEMP: for a connection's own use)."""
        macro = "TEMP MACRO" if temporary else "MACRO"
        if self.kind == "table":
            signature = ", ".join(f"{p} := {default}" for p, default in self.params)
            return f"CREATE OR REPLACE {macro} {self.name}({signature}) AS TABLE\n{self.body}"
        if self.kind == "scalar":
            return f"CREATE OR REPLACE {macro} {self.name}({', '.join(p for p, _ in self.params)}) AS\n{self.body}"
        raise QueryError(f"{self.name}.sql: a statement is run by run_statement, not installed as a macro")

    def calls(self, names: set[str]) -> set[str]:
        return {n for n in names if n != self.name and re.search(rf"\b{n}\s*\(", self.body)}


def _split_params(declared: str) -> list[str]:
    """`a := 1, b := ['x', 'y']  -- meaning` -> ['a := 1', "b := ['x', 'y']"]: commas inside a list
    or a string literal, and the trailing comment, are not separators."""
    parts, current, depth, quoted = [], "", 0, False
    for i, char in enumerate(declared):
        if char == "'":
            quoted = not quoted
        elif not quoted and char in "[]":
            depth += 1 if char == "[" else -1
        elif not quoted and declared.startswith("--", i):
            break
        if char == "," and not quoted and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    return [part.strip() for part in [*parts, current]]


def _parse_params(declared: str, kind: str, source: str) -> list[tuple[str, str | None]]:
    params = []
    if declared == "(none)":
        return params
    for param in _split_params(declared):
        if kind == "table":
            match = _PARAM.match(param)
            if not match:
                raise QueryError(f"{source}: -- params: {param!r} is not `name := default`")
            params.append((match.group(1), match.group(2)))
        elif _NAME.match(param):
            params.append((param, None))
        else:
            raise QueryError(f"{source}: -- params: {param!r} is not a bare name (a {kind} query's "
                             "parameters have no defaults)")
    return params


def _check_params_used(params, body: str, kind: str, source: str) -> None:
    for name, _ in params:
        used = rf"\${name}\b" if kind == "statement" else rf"(?<![\w.$]){name}\b"
        if not re.search(used, body):
            raise QueryError(f"{source}: parameter {name!r} is declared but never used")
    if kind == "statement":
        declared = {name for name, _ in params}
        for name in re.findall(r"\$([A-Za-z_]\w*)", body):
            if name not in declared:
                raise QueryError(f"{source}: parameter ${name} is used but not declared in -- params:")


def parse_query(text: str, source: str) -> Query:
    header, body_lines = {}, []
    for line in text.splitlines():
        match = _HEADER.match(line.strip())
        if match and not body_lines:
            header[match.group(1)] = match.group(2).strip()
        elif line.strip() or body_lines:
            body_lines.append(line)
    kind = header.get("kind", "table")
    if kind not in KINDS:
        raise QueryError(f"{source}: -- kind: {kind!r} is not one of {', '.join(KINDS)}")
    missing = [k for k in ("name", "description", "params", _SHAPE[kind]) if k not in header]
    if missing:
        raise QueryError(f"{source}: header lacks {', '.join(f'-- {k}:' for k in missing)}")
    if header["name"] != Path(source).stem:
        raise QueryError(f"{source}: -- name: {header['name']!r} must equal the file name "
                         f"{Path(source).stem!r}")
    params = _parse_params(header["params"], kind, source)
    body = "\n".join(body_lines).strip().rstrip(";")
    _check_params_used(params, body, kind, source)
    if kind == "table" and not re.search(r"\bfinal\s+AS\s*\(", body, re.IGNORECASE):
        raise QueryError(f"{source}: the query must end in a CTE named `final`")
    columns = tuple(c.strip() for c in header[_SHAPE[kind]].split(","))
    return Query(header["name"], header["description"], tuple(params), columns, body, kind)


def load_queries(directory: Path | None = None) -> list[Query]:
    """Every query of the library (default: the one shipped in the wheel), callees first."""
    if directory is None:
        return list(_library())
    return _ordered([parse_query(f.read_text(), f.name) for f in Path(directory).glob("*.sql")])


@functools.cache
def _library() -> tuple[Query, ...]:
    files = [f for f in resources.files("raysweep.analysis").iterdir() if f.name.endswith(".sql")]
    return tuple(_ordered([parse_query(f.read_text(), f.name) for f in files]))


def _ordered(parsed: list[Query]) -> list[Query]:
    queries = {q.name: q for q in parsed}
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


def get_query(name: str, kind: str | None = None) -> Query:
    """The library's query `name` (of the given kind); a QueryError names the ones there are."""
    by_name = {q.name: q for q in _library() if kind is None or q.kind == kind}
    if name not in by_name:
        raise QueryError(f"no {kind + ' ' if kind else ''}query named {name!r} in analysis/; there are: "
                         f"{', '.join(sorted(by_name))}")
    return by_name[name]


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


def install_queries(con, queries: list[Query] | None = None, temporary: bool = False) -> None:
    """Create every table and scalar query as a macro on a DuckDB connection (statements are run, not
    installed); TEMP ones live only as long as the connection."""
    for query in queries if queries is not None else load_queries():
        if query.kind != "statement":
            con.execute(query.create_sql(temporary=temporary))


def _check_arguments(query: Query, params: dict) -> None:
    declared = [name for name, _ in query.params]
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise QueryError(f"{query.name}.sql: no parameter {', '.join(unknown)}; it takes: "
                         f"{', '.join(declared) or '(none)'}")
    missing = [name for name, default in query.params if default is None and name not in params]
    if missing:
        raise QueryError(f"{query.name}.sql: parameter {', '.join(missing)} is required")


def run_query(con, name: str, **params):
    """`SELECT * FROM name(p := ?, ...)`: a table query of the library, installed on `con`, by name,
    its parameters passed as values (never written into the SQL). Returns the executed connection
    (`.df()`, `.fetchall()`, ...)."""
    query = get_query(name, "table")
    _check_arguments(query, params)
    arguments = ", ".join(f"{param} := ?" for param in params)  # declared names, checked above
    return con.execute(f"SELECT * FROM {query.name}({arguments})", list(params.values()))


def run_statement(con, name: str, **params) -> None:
    """Run a statement query of the library by name, each of its statements with the `$name`
    parameters it uses."""
    query = get_query(name, "statement")
    _check_arguments(query, params)
    for statement in con.extract_statements(query.body):
        used = {param: params[param] for param in statement.named_parameters}
        if used:
            con.execute(statement, used)
        else:
            con.execute(statement)
