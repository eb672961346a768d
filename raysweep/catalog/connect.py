"""Ad-hoc SQL over one or more sweep catalogs, always read-only.

One sweep: its catalog.duckdb opened READ_ONLY (views and macros are stored in it). Several:
an in-memory database ATTACHes each catalog READ_ONLY and unions their tables into views
with a `sweep` column and trial ids qualified as `<sweep>/<trial_id>`; the SQL library is
installed over those views, so every query works the same on the union.
"""

from __future__ import annotations

import duckdb

from raysweep.catalog.build import SHARD_VIEWS, CatalogError, local_catalog, open_catalog, sql_literal
from raysweep.catalog.queries import load_queries
from raysweep.errors import first_line
from raysweep.store.layout import SweepLayout
from raysweep.store.storage import StoragePath, location, register_filesystems

_TRIAL_TABLES = ["trials", *SHARD_VIEWS, "final_tokens"]  # tables keyed by trial_id


def _aliases(sweep_dirs: list[StoragePath]) -> list[str]:
    """Sweep names as aliases; repeated names get a numeric suffix."""
    aliases = []
    for directory in sweep_dirs:
        name = location(directory).name
        alias, n = name, 2
        while alias in aliases:
            alias, n = f"{name}_{n}", n + 1
        aliases.append(alias)
    return aliases


def _identifier(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def union_sql(sweep_dirs: list[StoragePath]) -> str:
    """Statements that attach several catalogs and build the union views and macros. Written here:
    ATTACH takes the file and alias as literals, and each view names every attached catalog (paths and
    sweep names escaped)."""
    aliases = _aliases(sweep_dirs)
    names = {a: _identifier(a) for a in aliases}
    statements = [f"ATTACH {sql_literal(local_catalog(d))} AS {names[a]} (READ_ONLY)"
                  for d, a in zip(sweep_dirs, aliases)]
    for table in _TRIAL_TABLES:
        parts = [f"SELECT {sql_literal(a)} AS sweep, * REPLACE ({sql_literal(a + '/')} || trial_id AS trial_id) "
                 f"FROM {names[a]}.{table}" for a in aliases]
        statements.append(f"CREATE TEMP VIEW {table} AS " + " UNION ALL ".join(parts))
    # The same data key in two sweeps is the same data: keep one copy of its rows.
    statements.append("CREATE TEMP VIEW token_freq AS " + " UNION ".join(
        f"SELECT * FROM {names[a]}.token_freq" for a in aliases))
    statements.append("CREATE TEMP VIEW t_quantiles AS " + " UNION ".join(
        f"SELECT * FROM {names[a]}.t_quantiles" for a in aliases))
    # freq_bin and every query of the library, as each catalog holds them (statements only build a catalog)
    statements += [q.create_sql(temporary=True) for q in load_queries() if q.kind != "statement"]
    return ";\n".join(statements) + ";\n"


def connect(sweep_dirs: list[str | StoragePath]) -> duckdb.DuckDBPyConnection:
    """A read-only view of one sweep, or the union of several."""
    sweep_dirs = [SweepLayout.at(d).root for d in sweep_dirs]
    try:
        if len(sweep_dirs) == 1:
            return open_catalog(sweep_dirs[0])
        for sweep_dir in sweep_dirs:  # each one of this version, or an error naming the one to rebuild
            open_catalog(sweep_dir).close()
        con = duckdb.connect()
        register_filesystems(con, [location(d) for d in sweep_dirs])
        con.execute(union_sql(sweep_dirs))
        return con
    except duckdb.Error as exc:  # a damaged or foreign catalog.duckdb
        raise CatalogError(f"{' '.join(str(SweepLayout.at(d).catalog_file) for d in sweep_dirs)}: cannot open the "
                           f"catalog ({first_line(exc)}); rebuild it with `raysweep catalog SWEEP_DIR`") from None
