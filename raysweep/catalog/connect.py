"""Read-only connections to one or more sweep catalogs, safe on a sweep dir from someone else.

A sweep dir is data. Its catalog.duckdb is attached READ_ONLY to an in-memory database, and only its base
tables (`CATALOG_TABLES`) are read: a view or macro stored in the file never runs. The shard views and the
SQL library's macros are built on the connection from the installed package, over the shard list the
catalog holds (each path checked to stay inside the sweep dir). Then the connection is locked: no file or
network access outside the sweep dirs, no extension loading, and no changing those settings.

Several sweeps: their tables are unioned into views with a `sweep` column and trial ids qualified as
`<sweep>/<trial_id>`, so every query of the library works the same on the union.
"""

from __future__ import annotations

import duckdb

from raysweep.catalog.build import (CATALOG_TABLES, CATALOG_VERSION, OPTIONAL_TABLES, SHARD_VIEWS, CatalogError,
                                    local_catalog, shard_views, sql_identifier, sql_literal, stored_tables,
                                    stored_version)
from raysweep.catalog.queries import install_queries
from raysweep.catalog.sandbox import lock_down
from raysweep.errors import first_line
from raysweep.store.layout import SweepLayout
from raysweep.store.storage import StoragePath, location, register_filesystems

_TRIAL_TABLES = ["trials", *SHARD_VIEWS, "final_tokens", "final_token_types"]  # tables keyed by trial_id


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


def _database(alias: str) -> str:
    """The attached database of a sweep: its alias, apart from the names the connection defines."""
    return f"catalog_{alias}"


def _shard_paths(con, database: str, layout: SweepLayout) -> dict[str, list[StoragePath]]:
    """The complete shards of each kind, from the catalog's `shards` table: relative paths that must stay
    inside the sweep dir (no absolute path, no `..`)."""
    shards = {kind: [] for kind in SHARD_VIEWS}
    for kind, path in con.execute(f"SELECT kind, path FROM {sql_identifier(database)}.main.shards").fetchall():
        parts = str(path).split("/")
        if kind not in shards or str(path).startswith("/") or "\\" in str(path) or any(p in ("", ".", "..") for p in parts):
            raise CatalogError(f"{layout.catalog_file}: lists a shard outside the sweep dir ({path!r}); rebuild it "
                               f"with `raysweep catalog {layout.root}`")
        shards[kind].append(layout.root.joinpath(*parts))
    return shards


def _attach(con, layout: SweepLayout, database: str) -> None:
    """Attach a sweep's catalog read-only, and check that it is one this version builds, tables only."""
    con.execute(f"ATTACH {sql_literal(local_catalog(layout))} AS {sql_identifier(database)} (READ_ONLY)")
    if stored_version(con, database) != CATALOG_VERSION:
        raise CatalogError(f"{layout.catalog_file}: built by another raysweep version; rebuild it with "
                           f"`raysweep catalog {layout.root}` (it is derived from the shards)")
    missing = set(CATALOG_TABLES) - stored_tables(con, database)
    if missing:
        raise CatalogError(f"{layout.catalog_file}: {sorted(missing)[0]} is not a table, so this is not a catalog "
                           f"raysweep built; rebuild it with `raysweep catalog {layout.root}`")


def connect(sweep_dirs: list[str | StoragePath]) -> duckdb.DuckDBPyConnection:
    """A locked, read-only view of one sweep, or the union of several."""
    layouts = [SweepLayout.at(d) for d in sweep_dirs]
    aliases = _aliases([layout.root for layout in layouts])
    con = duckdb.connect()
    try:
        register_filesystems(con, [layout.root for layout in layouts])
        views = {}  # alias -> {view: SELECT}
        for layout, alias in zip(layouts, aliases):
            database = _database(alias)
            _attach(con, layout, database)
            tables = stored_tables(con, database)
            selects = {t: f"SELECT * FROM {sql_identifier(database)}.main.{t}" for t in CATALOG_TABLES
                       if t != "shards"}  # the shard list becomes the shard views
            selects |= {t: f"SELECT * FROM {sql_identifier(database)}.main.{t}" for t in OPTIONAL_TABLES if t in tables}
            final_step = dict(con.execute(f"SELECT trial_id, steps FROM {sql_identifier(database)}.main.trials").fetchall())
            views[alias] = selects | shard_views(_shard_paths(con, database, layout), final_step)
        lock_down(con, [layout.root for layout in layouts])
        for name, select in (views[aliases[0]].items() if len(aliases) == 1 else _union(views).items()):
            con.execute(f"CREATE TEMP VIEW {name} AS {select}")
        install_queries(con, temporary=True)
        return con
    except BaseException as exc:
        con.close()
        if isinstance(exc, duckdb.Error):  # a damaged or foreign catalog.duckdb
            raise CatalogError(f"{' '.join(str(layout.catalog_file) for layout in layouts)}: cannot open the catalog "
                               f"({first_line(exc)}); rebuild it with `raysweep catalog SWEEP_DIR`") from None
        raise


def _union(views: dict[str, dict[str, str]]) -> dict[str, str]:
    """Each view over several sweeps: the trial tables with a `sweep` column and qualified trial ids;
    token_freq and t_quantiles deduplicated (the same data key in two sweeps is the same data)."""
    union = {}
    for table in _TRIAL_TABLES:
        union[table] = " UNION ALL ".join(
            f"SELECT {sql_literal(alias)} AS sweep, * REPLACE ({sql_literal(alias + '/')} || trial_id AS trial_id) "
            f"FROM ({selects[table]})" for alias, selects in views.items())
    for table in ("token_freq", "t_quantiles"):
        union[table] = " UNION ".join(f"SELECT * FROM ({selects[table]})" for selects in views.values())
    return union


# What `raysweep sql` runs: queries (SELECT, DESCRIBE, SHOW, SUMMARIZE, FROM ...) and their plans. COPY, ATTACH,
# CREATE, INSERT, INSTALL / LOAD, SET, PRAGMA and the rest are refused before anything runs.
READ_STATEMENTS = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}


def read_only_statements(con, sql: str) -> list:
    """The statements of `sql`, once each is a query (READ_STATEMENTS); else one line naming the first other."""
    statements = con.extract_statements(sql)
    for statement in statements:
        if statement.type not in READ_STATEMENTS:
            text = " ".join(statement.query.split())
            raise CatalogError(f"query: {statement.type.name} is not read-only ({text[:60]!r}); raysweep sql runs "
                               "queries only (SELECT, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN)")
    return statements


def has_view(con, name: str) -> bool:
    """The connection defines a view `name` (e.g. pareto_front, for a search)."""
    return con.execute("SELECT count(*) > 0 FROM duckdb_views() WHERE temporary AND view_name = ?",
                       [name]).fetchone()[0]
