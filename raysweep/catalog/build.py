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
import typing
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import yaml
from tqdm import tqdm

from raysweep.spec.schema import OBJECTIVE_METRICS, SearchParam
from raysweep.catalog.queries import install_queries, query_with_callees
from raysweep.errors import first_line
from raysweep.store.layout import SweepLayout, partition_keys
from raysweep.store.shards import EMBEDDING_SCHEMA, TOKEN_SCHEMA, TRAIN_METRICS_SCHEMA, complete_shards
from raysweep.store.storage import (StoragePath, fetch_file, is_remote, read_parquet_schema, read_parquet_table,
                                    register_filesystems)

# Bins by training count: floor(log3(count)); the epsilon keeps exact powers of 3 in their own
# bin despite float rounding of ln(c)/ln(3). Types never seen in training get bin -1 ('unseen').
_MACROS = """
CREATE MACRO freq_bin(c) AS
    CASE WHEN c = 0 THEN -1 ELSE CAST(floor(ln(c) / ln(3) + 1e-9) AS INTEGER) END;
"""


def _sql_list(paths: list[StoragePath]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


# What the catalog's tables, views and macros look like; a catalog of another version is rebuilt.
# 2: the redesign (named report queries, exact t quantiles).
CATALOG_VERSION = 2

# view name -> (shard subdir, selected columns, hive partition types, typed empty columns)
SHARD_VIEWS = {
    "tokens": ("tokens", "split, trial AS trial_id, step, seq_id, pos, token_id, loss, correct",
               "{'split': VARCHAR, 'trial': VARCHAR, 'step': BIGINT}",
               "NULL::VARCHAR AS split, NULL::VARCHAR AS trial_id, NULL::BIGINT AS step, "
               "NULL::INTEGER AS seq_id, NULL::INTEGER AS pos, NULL::INTEGER AS token_id, "
               "NULL::FLOAT AS loss, NULL::BOOLEAN AS correct"),
    "embeddings": ("embeddings", "trial AS trial_id, step, token_id, input_norm, output_norm",
                   "{'trial': VARCHAR, 'step': BIGINT}",
                   "NULL::VARCHAR AS trial_id, NULL::BIGINT AS step, NULL::INTEGER AS token_id, "
                   "NULL::FLOAT AS input_norm, NULL::FLOAT AS output_norm"),
    # `upto` is the step of the report that wrote the chunk; train_curves de-duplicates on it.
    "train_metrics": ("train_metrics",
                      "trial AS trial_id, step, loss, lr, tokens_per_s, step_time_s, mfu, time, upto",
                      "{'trial': VARCHAR, 'upto': BIGINT}",
                      "NULL::VARCHAR AS trial_id, NULL::BIGINT AS step, NULL::DOUBLE AS loss, "
                      "NULL::DOUBLE AS lr, NULL::DOUBLE AS tokens_per_s, NULL::DOUBLE AS step_time_s, "
                      "NULL::DOUBLE AS mfu, NULL::DOUBLE AS time, "
                      "NULL::BIGINT AS upto"),
}


class CatalogError(ValueError):
    """A sweep whose files cannot be cataloged; the message names the file and the fix."""


_SCHEMAS = {"tokens": TOKEN_SCHEMA, "embeddings": EMBEDDING_SCHEMA, "train_metrics": TRAIN_METRICS_SCHEMA}


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
        if not schema.equals(_SCHEMAS[name]):
            raise CatalogError(f"{path}: columns ({', '.join(f'{f.name} {f.type}' for f in schema)}) "
                               f"are not the {name} shard schema ({', '.join(_SCHEMAS[name].names)}); "
                               "written by another raysweep version or another program: read the sweep "
                               "with the raysweep version that wrote it, or move the file out")


def _shard_view(name: str, shards: list[StoragePath], kind: str | None = None) -> str:
    """A view over the complete shards only; typed and empty while there are none yet."""
    _, columns, hive_types, empty = SHARD_VIEWS[kind or name]
    if not shards:
        return f"CREATE VIEW {name} AS SELECT {empty} WHERE false"
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
    freq_files = [marker.parent / "token_freq.parquet" for marker in layout.built_data_markers()]
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
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
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


def catalog_version(con) -> int | None:
    """The layout version a catalog was built with (None: a catalog of before versions were recorded)."""
    if not con.execute("SELECT 1 FROM duckdb_tables() WHERE table_name = 'catalog_info'").fetchall():
        return None
    return con.execute("SELECT version FROM catalog_info").fetchone()[0]


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
    """A DuckDB table holding an Arrow table's rows (the name is ours, never user text)."""
    con.register("_rows", table)
    con.execute(f"CREATE TABLE {name} AS SELECT * FROM _rows")
    con.unregister("_rows")


def _write_catalog(tmp: Path, layout: SweepLayout, freq_files: list[StoragePath]) -> None:
    with duckdb.connect(str(tmp)) as con:
        register_filesystems(con, [layout.root])
        con.execute(_MACROS)
        _create_token_freq(con, freq_files)
        trials = _trials_table(layout)
        create_table(con, "trials", trials)
        create_table(con, "t_quantiles", t_quantiles(trials.num_rows))
        for name in tqdm(SHARD_VIEWS, desc="catalog: shard views", unit="view",
                         disable=None):  # disable=None: only on a terminal
            shards = complete_shards(layout.shards_root(name))
            _check_shards(name, shards)
            if name == "tokens":
                _create_token_views(con, shards)
            else:
                con.execute(_shard_view(name, shards))
        install_queries(con)
        con.execute("CREATE TABLE catalog_info AS SELECT ? AS version", [CATALOG_VERSION])
        search = search_settings(layout)
        if search is not None:
            con.execute(f"CREATE TABLE pareto_front AS {pareto_front_sql(search)}")


def _create_token_freq(con, freq_files: list[StoragePath]) -> None:
    con.execute(f"""CREATE TABLE token_freq AS
        SELECT regexp_extract(filename, '/data/([^/]+)/token_freq.parquet$', 1) AS data_key,
               token_id, count, rank, share, piece, n_chars, freq_bin(count) AS bin
        FROM read_parquet({_sql_list(freq_files)}, filename = true)""")


def _create_token_views(con, shards: list[StoragePath]) -> None:
    """`tokens`, and `final_tokens` over the files of each trial's last step (trials.steps): listing
    them up front lets DuckDB skip the other steps' files at plan time; a join against `trials`
    would read every file's rows before filtering them."""
    con.execute(_shard_view("tokens", shards))
    final_step = dict(con.execute("SELECT trial_id, steps FROM trials").fetchall())
    con.execute(_shard_view("final_tokens", _at_final_step(shards, final_step), "tokens"))


# The fields a search may vary, shown beside the objectives in `pareto_front` and the search tables
SEARCH_COLUMNS = ", ".join(f"tr.{field}" for field in typing.get_args(SearchParam))


def search_objectives_sql(objectives: list[str]) -> str:
    """One row per finished trial: its `<split>_<metric>` objectives (final step) and searched fields."""
    columns = ", ".join(f"max(o.{o.split('_', 1)[1]}) FILTER (WHERE o.split = '{o.split('_', 1)[0]}') AS {o}"
                        for o in objectives)
    return f"""SELECT o.trial_id, {columns}, {SEARCH_COLUMNS}
        FROM trial_objectives() o JOIN trials tr ON tr.trial_id = o.trial_id
        WHERE tr.status = 'TERMINATED'
        GROUP BY ALL"""


def pareto_front_sql(objectives: list[str]) -> str:
    """The finished trials no other trial dominates (<= on every objective, < on one), with their
    searched fields: the search's Pareto front."""
    at_most = " AND ".join(f"other.{o} <= o.{o}" for o in objectives)
    below = " OR ".join(f"other.{o} < o.{o}" for o in objectives)
    return f"""WITH o AS ({search_objectives_sql(objectives)})
        SELECT * FROM o
        WHERE NOT EXISTS (SELECT 1 FROM o AS other WHERE {at_most} AND ({below}))
        ORDER BY {', '.join(objectives)}, trial_id"""


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
        con.execute(_MACROS)
        _create_token_freq(con, [data_dir / "token_freq.parquet"])
        create_table(con, "trials", pa.Table.from_pylist([trial_row], schema=TRIALS_SCHEMA))
        _create_token_views(con, shards)
        install_queries(con, query_with_callees("trial_objectives"))
        rows = con.execute("SELECT * FROM trial_objectives()").df().to_dict("records")
    return {f"{row['split']}_{metric}": row[metric] for row in rows for metric in OBJECTIVE_METRICS}
