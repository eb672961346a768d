"""The DuckDB catalog of a sweep: views over complete shards plus the small tables.

`catalog.duckdb` is derived data: built under a temporary name and renamed into place, and
rebuilt from the sweep dir at any time with `raysweep catalog`. For a sweep on an object store
it is built locally and uploaded beside the shards; readers open a local copy of it with the
store's filesystem registered on the connection, so the views read the shards where they are.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import yaml
from tqdm import tqdm

from raysweep.spec.schema import OBJECTIVE_METRICS
from raysweep.catalog.queries import install_queries, query_with_callees, run_query, run_statement
from raysweep.errors import first_line
from raysweep.store.layout import SweepLayout, partition_keys, token_freq_file
from raysweep.store.shards import (EMBEDDING_PARTITIONS, EMBEDDING_SCHEMA, TOKEN_PARTITIONS, TOKEN_SCHEMA,
                                   TRAIN_METRICS_PARTITIONS, TRAIN_METRICS_SCHEMA, complete_shards)
from raysweep.store.storage import (StoragePath, fetch_file, is_remote, read_parquet_schema, read_parquet_table,
                                    register_filesystems, temporary_sibling)


def sql_literal(text) -> str:
    """A string as a SQL literal, quotes doubled: for the statements DuckDB takes no parameters in
    (a view's file list, ATTACH)."""
    return "'" + str(text).replace("'", "''") + "'"


def _sql_list(paths: list[StoragePath]) -> str:
    return "[" + ", ".join(sql_literal(p) for p in paths) + "]"


# What the catalog's tables, views and macros look like; a catalog of another version is rebuilt.
# 2: the redesign (named report queries, exact t quantiles).
CATALOG_VERSION = 2


@dataclass(frozen=True)
class ShardView:
    """A view over one kind of shard: the hive keys of the shard paths, then the file's columns
    (keys named in `keys_last` after them); the key `trial` shows as `trial_id`."""

    file_schema: pa.Schema
    partitions: pa.Schema
    keys_last: tuple[str, ...] = ()

    def fields(self) -> list[tuple[pa.Field, str]]:
        """(source field, name in the view), in the view's order."""
        keys = [f for f in self.partitions if f.name not in self.keys_last]
        last = [self.partitions.field(name) for name in self.keys_last]
        return [(f, "trial_id" if f.name == "trial" else f.name) for f in [*keys, *self.file_schema, *last]]


# view name -> its shards' columns; the subdir of shards/ is the view's name
SHARD_VIEWS = {
    "tokens": ShardView(TOKEN_SCHEMA, TOKEN_PARTITIONS),
    "embeddings": ShardView(EMBEDDING_SCHEMA, EMBEDDING_PARTITIONS),
    # `upto` is bookkeeping (train_curves de-duplicates retried steps on it): after the metrics
    "train_metrics": ShardView(TRAIN_METRICS_SCHEMA, TRAIN_METRICS_PARTITIONS, keys_last=("upto",)),
}

# The DuckDB type of each Arrow type a shard or a partition key holds
DUCKDB_TYPES = {pa.string(): "VARCHAR", pa.int32(): "INTEGER", pa.int64(): "BIGINT", pa.float32(): "FLOAT",
                 pa.float64(): "DOUBLE", pa.bool_(): "BOOLEAN"}


class CatalogError(ValueError):
    """A sweep whose files cannot be cataloged; the message names the file and the fix."""


def _check_shards(name: str, shards: list[StoragePath]) -> None:
    """Every shard's footer parses and its columns are the view's: a bad file is named here,
    at build time, instead of failing some later query with DuckDB's error."""
    for path in shards:
        try:
            schema = read_parquet_schema(path)
        except Exception as exc:  # pyarrow raises ArrowInvalid / OSError for a damaged footer
            raise CatalogError(f"{path}: not a readable Parquet shard ({first_line(exc)}); "
                               "`raysweep verify` lists every damaged file; move it away to build "
                               "the catalog without it") from None
        expected = SHARD_VIEWS[name].file_schema
        if not schema.equals(expected):
            raise CatalogError(f"{path}: columns ({', '.join(f'{f.name} {f.type}' for f in schema)}) "
                               f"are not the {name} shard schema ({', '.join(expected.names)}); "
                               "written by another raysweep version or another program: read the sweep "
                               "with the raysweep version that wrote it, or move the file out")


def shard_view_sql(name: str, shards: list[StoragePath], kind: str | None = None) -> str:
    """A view over the complete shards only; typed and empty while there are none yet. A view cannot
    take parameters, so its statement names the files (escaped) and is written here; every name and
    type in it comes from the ShardView."""
    view = SHARD_VIEWS[kind or name]
    if not shards:
        empty = ", ".join(f"NULL::{DUCKDB_TYPES[f.type]} AS {shown}" for f, shown in view.fields())
        return f"CREATE VIEW {name} AS SELECT {empty} WHERE false"
    columns = ", ".join(f.name if f.name == shown else f"{f.name} AS {shown}" for f, shown in view.fields())
    hive_types = "{" + ", ".join(f"'{f.name}': {DUCKDB_TYPES[f.type]}" for f in view.partitions) + "}"
    return f"""CREATE VIEW {name} AS SELECT {columns}
        FROM read_parquet({_sql_list(shards)}, hive_partitioning = true, hive_types = {hive_types})"""


def _at_final_step(shards: list[StoragePath], final_step: dict[str, int]) -> list[StoragePath]:
    """The token shards written at their trial's last step (trials.steps)."""
    keyed = ((shard, partition_keys(shard)) for shard in shards)
    return [shard for shard, keys in keyed if final_step.get(keys["trial"]) == int(keys["step"])]


def build_catalog(sweep_dir) -> StoragePath:
    """(Re)build `catalog.duckdb` from the shards, data dirs and trials table of a sweep."""
    layout = SweepLayout.at(sweep_dir)
    # Complete data dirs only (meta.json is written or uploaded last), never a staging dir.
    freq_files = [token_freq_file(marker.parent) for marker in layout.built_data_markers()]
    if not freq_files or not layout.trials_file.exists():
        raise FileNotFoundError(f"{layout.root}: not a finished sweep directory (no data/*/token_freq.parquet "
                                "or trials.parquet); run `raysweep sweep SPEC.yaml` first")
    final = layout.catalog_file
    if is_remote(final):
        with tempfile.TemporaryDirectory(prefix="raysweep-catalog-") as staging:
            built = Path(staging) / final.name
            _write_catalog(built, layout, freq_files)
            final.fs.put_file(str(built), final.path)  # one upload: the old catalog or the new
        return final
    tmp = temporary_sibling(final)
    try:
        _write_catalog(tmp, layout, freq_files)
    except BaseException:
        tmp.unlink(missing_ok=True)  # the previous catalog, if any, stays as it was
        raise
    os.replace(tmp, final)
    return final


def local_catalog(sweep_dir) -> Path:
    """The catalog file to open: the sweep's own, or a fresh local copy of a stored one."""
    layout = SweepLayout.at(sweep_dir)
    path = layout.catalog_file
    if not path.exists():
        raise FileNotFoundError(f"{layout.root}: no {path.name}; run `raysweep catalog {layout.root}` "
                                "on a sweep directory first")
    return fetch_file(path, f"{hashlib.sha256(str(layout.root).encode()).hexdigest()[:16]}-{path.name}")


def open_catalog(sweep_dir) -> duckdb.DuckDBPyConnection:
    """A read-only connection to a sweep's catalog that can read its shards wherever they are."""
    layout = SweepLayout.at(sweep_dir)
    con = duckdb.connect(str(local_catalog(layout)), read_only=True)
    if catalog_version(con) != CATALOG_VERSION:
        con.close()
        raise CatalogError(f"{layout.catalog_file}: built by another raysweep version; rebuild it with "
                           f"`raysweep catalog {layout.root}` (it is derived from the shards)")
    register_filesystems(con, [layout.root])
    return con


def has_table(con, name: str) -> bool:
    """The connection's database holds a table `name` (catalog introspection, not a library query)."""
    return con.execute("SELECT count(*) > 0 FROM duckdb_tables() WHERE database_name = current_database() "
                       "AND table_name = ?", [name]).fetchone()[0]


def catalog_version(con) -> int | None:
    """The layout version a catalog was built with (None: a catalog of before versions were recorded).
    Read from the table itself, not through a query of the library: the catalog may be of any version."""
    if not has_table(con, "catalog_info"):
        return None
    return con.table("catalog_info").select("version").fetchone()[0]


def is_current(sweep_dir) -> bool:
    """The sweep has a catalog this version can read."""
    layout = SweepLayout.at(sweep_dir)
    if not layout.catalog_file.exists():
        return False
    try:
        with duckdb.connect(str(local_catalog(layout)), read_only=True) as con:
            return catalog_version(con) == CATALOG_VERSION
    except duckdb.Error:  # damaged: rebuilt like a missing one
        return False


def _trials_table(layout: SweepLayout) -> pa.Table:
    from raysweep.run.migrations import upgrade_trials_table
    from raysweep.run.trials_table import TRIALS_SCHEMA

    return upgrade_trials_table(read_parquet_table(layout.trials_file), layout, TRIALS_SCHEMA)


def t_quantiles(n_trials: int) -> pa.Table:
    """The exact 95% two-sided Student t quantile for df = 1 .. max(1024, n_trials): an interval over
    n seeds uses df = n - 1, and no group of a sweep can pool more seeds than it has trials."""
    from scipy import stats

    df = np.arange(1, max(1024, n_trials) + 1)
    return pa.table({"df": pa.array(df, pa.int64()), "t": stats.t.ppf(0.975, df)})


def create_table(con, name: str, table: pa.Table) -> None:
    """A DuckDB table holding an Arrow table's rows."""
    con.from_arrow(table).create(name)


def _write_catalog(tmp: Path, layout: SweepLayout, freq_files: list[StoragePath]) -> None:
    with duckdb.connect(str(tmp)) as con:
        register_filesystems(con, [layout.root])
        _create_token_freq(con, freq_files)
        trials = _trials_table(layout)
        create_table(con, "trials", trials)
        create_table(con, "t_quantiles", t_quantiles(trials.num_rows))
        final_step = dict(zip(trials["trial_id"].to_pylist(), trials["steps"].to_pylist()))
        for name in tqdm(SHARD_VIEWS, desc="catalog: shard views", unit="view",
                         disable=None):  # disable=None: only on a terminal
            shards = complete_shards(layout.shards_root(name))
            _check_shards(name, shards)
            if name == "tokens":
                _create_token_views(con, shards, final_step)
            else:
                con.execute(shard_view_sql(name, shards))
        install_queries(con)
        run_statement(con, "create_catalog_info", version=CATALOG_VERSION)
        search = search_settings(layout)
        if search is not None:
            run_statement(con, "create_pareto_front", objectives=search)


def _create_token_freq(con, freq_files: list[StoragePath]) -> None:
    install_queries(con, query_with_callees("create_token_freq"))  # freq_bin, before the other queries
    run_statement(con, "create_token_freq", files=[str(path) for path in freq_files])


def _create_token_views(con, shards: list[StoragePath], final_step: dict[str, int]) -> None:
    """`tokens`, and `final_tokens` over the files of each trial's last step (`final_step`, from
    trials.steps): listing them up front lets DuckDB skip the other steps' files at plan time; a join
    against `trials` would read every file's rows before filtering them."""
    con.execute(shard_view_sql("tokens", shards))
    con.execute(shard_view_sql("final_tokens", _at_final_step(shards, final_step), "tokens"))


def search_settings(sweep_dir) -> list[str] | None:
    """The objectives of a `search: optuna` sweep, from its spec.yaml; None for a grid. Read
    as written (a full dump of the validated spec)."""
    spec_file = SweepLayout.at(sweep_dir).spec_file
    raw = (yaml.safe_load(spec_file.read_text()) if spec_file.exists() else None) or {}
    if raw.get("search") != "optuna":
        return None
    return list(raw["optuna"]["objectives"])


def trial_objectives(layout: SweepLayout, trial_row: dict, data_dir: StoragePath) -> dict:
    """The `trial_objectives` query on one finished trial ({`<split>_<metric>`: value} for every split
    it has), over an in-memory catalog of just that trial: what its driver reports to the search."""
    from raysweep.run.trials_table import TRIALS_SCHEMA

    shards = sorted(s for trial_dir in layout.trial_token_dirs(trial_row["trial_id"]) for s in complete_shards(trial_dir))
    with duckdb.connect() as con:
        register_filesystems(con, [layout.root])
        _create_token_freq(con, [token_freq_file(data_dir)])
        create_table(con, "trials", pa.Table.from_pylist([trial_row], schema=TRIALS_SCHEMA))
        _create_token_views(con, shards, {trial_row["trial_id"]: trial_row["steps"]})
        install_queries(con, query_with_callees("trial_objectives"))
        rows = run_query(con, "trial_objectives").df().to_dict("records")
    return {f"{row['split']}_{metric}": row[metric] for row in rows for metric in OBJECTIVE_METRICS}
