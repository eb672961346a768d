"""The DuckDB catalog of a sweep: its small tables, and the list of its complete shards.

`catalog.duckdb` is derived data: built under a temporary name and renamed into place, and
rebuilt from the sweep dir at any time with `raysweep catalog`. It holds tables only (`CATALOG_TABLES`):
no view or macro is stored, because a sweep dir may come from someone else and SQL stored in a database
file runs when it is queried. Readers (raysweep.catalog.connect) attach a local copy read-only, check
that each name is a table, and build the shard views and the SQL library's macros on their own connection.
"""

from __future__ import annotations

import hashlib
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
from raysweep.catalog.sandbox import lock_down, sql_literal
from raysweep.errors import first_line
from raysweep.store.layout import SweepLayout, partition_keys, shard_rank, token_freq_file
from raysweep.store.shards import (EMBEDDING_PARTITIONS, EMBEDDING_SCHEMA, TOKEN_PARTITIONS, TOKEN_SCHEMA,
                                   TOKEN_TYPES_SCHEMA, TRAIN_METRICS_PARTITIONS, TRAIN_METRICS_SCHEMA, complete_shards,
                                   is_complete)
from raysweep.store.storage import (StoragePath, durable_replace, fetch_file, is_remote, read_parquet_schema,
                                    read_parquet_table, register_filesystems, temporary_sibling)


def _sql_list(paths: list[StoragePath]) -> str:
    return "[" + ", ".join(sql_literal(p) for p in paths) + "]"


# What the catalog's tables look like; a catalog of another version is rebuilt.
# 2: the redesign (named report queries, exact t quantiles). 3: tables only (the shard list in `shards`).
# 4: the per-type rollups (`token_types`), which the per-type queries read.
CATALOG_VERSION = 4
# Every table a catalog holds (pareto_front only for a search), and nothing else is read from it.
CATALOG_TABLES = ("catalog_info", "trials", "token_freq", "t_quantiles", "shards")
OPTIONAL_TABLES = ("pareto_front",)


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
    "token_types": ShardView(TOKEN_TYPES_SCHEMA, TOKEN_PARTITIONS),
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


def shard_select_sql(kind: str, shards: list[StoragePath]) -> str:
    """A SELECT over complete shards of one kind; typed and empty while there are none yet. A view cannot
    take parameters, so the statement names the files (escaped) and is written here; every name and
    type in it comes from the ShardView."""
    view = SHARD_VIEWS[kind]
    if not shards:
        empty = ", ".join(f"NULL::{DUCKDB_TYPES[f.type]} AS {shown}" for f, shown in view.fields())
        return f"SELECT {empty} WHERE false"
    columns = ", ".join(f.name if f.name == shown else f"{f.name} AS {shown}" for f, shown in view.fields())
    hive_types = "{" + ", ".join(f"'{f.name}': {DUCKDB_TYPES[f.type]}" for f in view.partitions) + "}"
    return f"""SELECT {columns}
        FROM read_parquet({_sql_list(shards)}, hive_partitioning = true, hive_types = {hive_types})"""


def shard_views(shards: dict[str, list[StoragePath]], final_step: dict[str, int]) -> dict[str, str]:
    """Each shard view's SELECT (`shards`: the complete shards of each kind): `tokens`, `token_types` (rollups,
    `token_types_select_sql`), `embeddings`, `train_metrics`, and `final_tokens` / `final_token_types` over the
    files of each trial's last step (`final_step`, from trials.steps): listing them up front lets DuckDB skip the
    other steps' files at plan time; a join against `trials` would read every file's rows before filtering them."""
    views = {kind: shard_select_sql(kind, files) for kind, files in shards.items() if kind != "token_types"}
    views["final_tokens"] = shard_select_sql("tokens", _at_final_step(shards["tokens"], final_step))
    views["token_types"] = token_types_select_sql(shards["tokens"], shards["token_types"])
    views["final_token_types"] = token_types_select_sql(_at_final_step(shards["tokens"], final_step),
                                                        _at_final_step(shards["token_types"], final_step))
    return views


def whole_steps(shards: list[StoragePath], workers: int) -> list[StoragePath]:
    """The token shards of the (trial, step)s whose eval is whole: for every split the trial has shards of, a
    complete shard from each of its ranks (`workers`, or more if its shards show more). Without this, a step
    at which one rank kept dying would show the losses of half the eval set as the step's."""
    ranks, splits, seen = {}, {}, {}
    for shard in shards:
        keys, rank = partition_keys(shard), shard_rank(shard)
        ranks[keys["trial"]] = max(ranks.get(keys["trial"], workers), rank + 1)
        splits.setdefault(keys["trial"], set()).add(keys["split"])
        seen.setdefault((keys["trial"], keys["step"], keys["split"]), set()).add(rank)

    def whole(trial: str, step: str) -> bool:
        return all(seen.get((trial, step, split)) == set(range(ranks[trial])) for split in splits[trial])

    return [s for s in shards if whole(partition_keys(s)["trial"], partition_keys(s)["step"])]


def _eval_of(shard: StoragePath) -> tuple[str, str, str]:
    keys = partition_keys(shard)
    return keys["split"], keys["trial"], keys["step"]


def eval_rollups(token_shards: list[StoragePath], rollups: list[StoragePath]) -> list[StoragePath]:
    """The rollups of evals that `token_shards` holds (the whole ones, `whole_steps`): a rollup whose eval is not
    whole is left out, so a per-type query says what the rows say."""
    evals = {_eval_of(shard) for shard in token_shards}
    return [rollup for rollup in rollups if _eval_of(rollup) in evals]


def token_types_select_sql(token_shards: list[StoragePath], rollups: list[StoragePath]) -> str:
    """The `token_types` view: the rollups, and for an eval without one (a sweep written before rollups, an eval
    cut short between its shards and its rollup) the same sums computed from its token shards. Reading, never
    writing: a reader holds no lock, and the sweep dir may be someone else's."""
    rolled = {_eval_of(rollup) for rollup in rollups}
    unrolled = [shard for shard in token_shards if _eval_of(shard) not in rolled]
    if not unrolled:
        return shard_select_sql("token_types", rollups)
    summed = (f"SELECT split, trial_id, step, token_id, count(*) AS n_occurrences, sum(loss) AS sum_loss, "
              f"CAST(count_if(correct) AS BIGINT) AS n_correct FROM ({shard_select_sql('tokens', unrolled)}) "
              "GROUP BY split, trial_id, step, token_id")
    return summed if not rollups else f"{shard_select_sql('token_types', rollups)} UNION ALL {summed}"


def sweep_workers(layout: SweepLayout) -> int:
    """Ranks per trial, as the sweep's spec.yaml says (1 without one)."""
    raw = (yaml.safe_load(layout.spec_file.read_text()) if layout.spec_file.exists() else None) or {}
    return int((raw.get("resources") or {}).get("workers_per_trial", 1))


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
    durable_replace(tmp, final)
    return final


def local_catalog(sweep_dir) -> Path:
    """The catalog file to open: the sweep's own, or a fresh local copy of a stored one."""
    layout = SweepLayout.at(sweep_dir)
    path = layout.catalog_file
    if not path.exists():
        raise FileNotFoundError(f"{layout.root}: no {path.name}; run `raysweep catalog {layout.root}` "
                                "on a sweep directory first")
    return fetch_file(path, f"{hashlib.sha256(str(layout.root).encode()).hexdigest()[:16]}-{path.name}")


def stored_version(con, database: str) -> int | None:
    """The layout version of the catalog attached as `database` (None: one of before versions were
    recorded, or a file whose catalog_info is not a table). Read only from a table: selecting from a view
    would run the SQL stored in the file."""
    if "catalog_info" not in stored_tables(con, database):
        return None
    return con.execute(f"SELECT version FROM {sql_identifier(database)}.main.catalog_info").fetchone()[0]


def stored_tables(con, database: str) -> set[str]:
    """The base tables (never views) of an attached database."""
    return {row[0] for row in con.execute("SELECT table_name FROM duckdb_tables() WHERE database_name = ? "
                                          "AND schema_name = 'main'", [database]).fetchall()}


def sql_identifier(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def is_current(sweep_dir) -> bool:
    """The sweep has a catalog this version can read."""
    layout = SweepLayout.at(sweep_dir)
    if not layout.catalog_file.exists():
        return False
    try:
        with duckdb.connect() as con:
            con.execute(f"ATTACH {sql_literal(local_catalog(layout))} AS stored (READ_ONLY)")
            lock_down(con, [layout.root])
            return stored_version(con, "stored") == CATALOG_VERSION
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
    """Tables only: the views and macros the build itself needs (for pareto_front) are TEMP, so they
    vanish with this connection."""
    with duckdb.connect(str(tmp)) as con:
        register_filesystems(con, [layout.root])
        lock_down(con, [layout.root, tmp.parent])  # it reads the sweep's files and writes the catalog, only
        _create_token_freq(con, freq_files)
        trials = _trials_table(layout)
        create_table(con, "trials", trials)
        create_table(con, "t_quantiles", t_quantiles(trials.num_rows))
        shards = {}
        for name in tqdm(SHARD_VIEWS, desc="catalog: shards", unit="kind",
                         disable=None):  # disable=None: only on a terminal
            shards[name] = complete_shards(layout.shards_root(name))
            _check_shards(name, shards[name])
        shards["tokens"] = whole_steps(shards["tokens"], sweep_workers(layout))
        shards["token_types"] = eval_rollups(shards["tokens"], shards["token_types"])
        create_table(con, "shards", pa.table({
            "kind": [kind for kind, files in shards.items() for _ in files],
            "path": [relative_to_sweep(layout, f) for files in shards.values() for f in files]}))
        final_step = dict(zip(trials["trial_id"].to_pylist(), trials["steps"].to_pylist()))
        for name, select in shard_views(shards, final_step).items():
            con.execute(f"CREATE TEMP VIEW {name} AS {select}")
        install_queries(con, temporary=True)
        run_statement(con, "create_catalog_info", version=CATALOG_VERSION)
        search = search_settings(layout)
        if search is not None:
            run_statement(con, "create_pareto_front", objectives=search)


def relative_to_sweep(layout: SweepLayout, path: StoragePath) -> str:
    """A shard's path inside its sweep dir, as the `shards` table keeps it (a moved sweep stays readable)."""
    root, text = str(layout.root).rstrip("/") + "/", str(path)
    if not text.startswith(root):
        raise CatalogError(f"{path}: outside the sweep dir {layout.root}")
    return text[len(root):]


def _create_token_freq(con, freq_files: list[StoragePath]) -> None:
    install_queries(con, query_with_callees("create_token_freq"), temporary=True)  # freq_bin
    run_statement(con, "create_token_freq", files=[str(path) for path in freq_files])


def search_settings(sweep_dir) -> list[str] | None:
    """The objectives of a `search: optuna` sweep, from its spec.yaml; None for a grid. Read
    as written (a full dump of the validated spec)."""
    spec_file = SweepLayout.at(sweep_dir).spec_file
    raw = (yaml.safe_load(spec_file.read_text()) if spec_file.exists() else None) or {}
    if raw.get("search") != "optuna":
        return None
    return list(raw["optuna"]["objectives"])


def trial_objectives(layout: SweepLayout, trial_row: dict, data_dir: StoragePath, step: int | None = None) -> dict:
    """The `trial_objectives` query on one trial at `step` (None: its last, trials.steps) ({`<split>_<metric>`:
    value} for every split it has), over an in-memory catalog of just that trial's shards of the step: what it
    reports to the search."""
    from raysweep.run.trials_table import TRIALS_SCHEMA

    step = trial_row["steps"] if step is None else step
    shards = sorted(s for trial_dir in layout.trial_token_dirs(trial_row["trial_id"]) for s in complete_shards(trial_dir)
                    if int(partition_keys(s)["step"]) == step)
    rollups = [rollup for split in sorted({partition_keys(s)["split"] for s in shards})
               if is_complete(rollup := layout.token_types_shard(split, trial_row["trial_id"], step))]
    with duckdb.connect() as con:
        register_filesystems(con, [layout.root])
        lock_down(con, [layout.root])
        _create_token_freq(con, [token_freq_file(data_dir)])
        create_table(con, "trials", pa.Table.from_pylist([trial_row], schema=TRIALS_SCHEMA))
        views = shard_views({"tokens": shards, "token_types": rollups},
                            {trial_row["trial_id"]: step})  # the step stands for the final one
        for name in ("tokens", "final_tokens", "token_types", "final_token_types"):
            con.execute(f"CREATE TEMP VIEW {name} AS {views[name]}")
        install_queries(con, query_with_callees("trial_objectives"), temporary=True)
        rows = run_query(con, "trial_objectives").df().to_dict("records")
    return {f"{row['split']}_{metric}": row[metric] for row in rows for metric in OBJECTIVE_METRICS}
