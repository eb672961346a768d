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
import pandas as pd
import pyarrow as pa
import yaml
from tqdm import tqdm

from raysweep.config import OBJECTIVE_METRICS, SearchParam
from raysweep.queries import install_queries, query_with_callees
from raysweep.shards import (EMBEDDING_SCHEMA, TOKEN_SCHEMA, TRAIN_METRICS_SCHEMA, complete_shards,
                             partition_keys)
from raysweep.storage import (StoragePath, fetch_file, is_remote, location, read_parquet_schema,
                              register_filesystems)

CATALOG_FILE = "catalog.duckdb"

# Bins by training count: floor(log3(count)); the epsilon keeps exact powers of 3 in their own
# bin despite float rounding of ln(c)/ln(3). Types never seen in training get bin -1 ('unseen').
_MACROS = """
CREATE MACRO freq_bin(c) AS
    CASE WHEN c = 0 THEN -1 ELSE CAST(floor(ln(c) / ln(3) + 1e-9) AS INTEGER) END;
"""


def _sql_list(paths: list[StoragePath]) -> str:
    return "[" + ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths) + "]"


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
            raise CatalogError(f"{path}: not a readable Parquet shard ({str(exc).splitlines()[0]}); "
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


# trials columns added after the first release, with the value they had before (plain AdamW)
_LATER_TRIALS_COLUMNS = {"freq_decay_alpha": "DOUBLE DEFAULT 0.0", "label_smoothing": "DOUBLE DEFAULT 0.0",
                         "dropout": "DOUBLE DEFAULT 0.0", "vocab_size": "BIGINT"}


def _add_columns_of_later_versions(con) -> None:
    """A trials table written before a column existed gets it, so every query reads one shape; a
    missing vocabulary size is the row count of the trial's token_freq (one row per token id)."""
    present = {row[0] for row in con.execute("DESCRIBE trials").fetchall()}
    for name, definition in _LATER_TRIALS_COLUMNS.items():
        if name not in present:
            con.execute(f"ALTER TABLE trials ADD COLUMN {name} {definition}")
    con.execute("UPDATE trials SET vocab_size = (SELECT count(*) FROM token_freq f "
                "WHERE f.data_key = trials.data_key) WHERE vocab_size IS NULL")


def build_catalog(sweep_dir: str | StoragePath) -> StoragePath:
    """(Re)build `catalog.duckdb` from the shards, data dirs and trials table of a sweep."""
    sweep_dir = location(sweep_dir)
    # Complete data dirs only (meta.json is written or uploaded last), never a staging dir.
    freq_files = sorted(meta.parent / "token_freq.parquet" for meta in sweep_dir.glob("data/*/meta.json")
                        if not meta.parent.name.startswith("."))
    trials_file = sweep_dir / "trials.parquet"
    if not freq_files or not trials_file.exists():
        raise FileNotFoundError(f"{sweep_dir}: not a finished sweep directory (no data/*/token_freq.parquet "
                                "or trials.parquet); run `raysweep sweep SPEC.yaml` first")
    final = sweep_dir / CATALOG_FILE
    if is_remote(final):
        with tempfile.TemporaryDirectory(prefix="raysweep-catalog-") as staging:
            built = Path(staging) / CATALOG_FILE
            _write_catalog(built, sweep_dir, freq_files, trials_file)
            final.fs.put_file(str(built), final.path)  # one upload: the old catalog or the new
        return final
    tmp = sweep_dir / f".{CATALOG_FILE}.tmp-{os.getpid()}"
    tmp.unlink(missing_ok=True)
    try:
        _write_catalog(tmp, sweep_dir, freq_files, trials_file)
    except BaseException:
        tmp.unlink(missing_ok=True)  # the previous catalog, if any, stays as it was
        raise
    os.replace(tmp, final)
    return final


def local_catalog(sweep_dir: str | StoragePath) -> Path:
    """The catalog file to open: the sweep's own, or a fresh local copy of a stored one."""
    sweep_dir = location(sweep_dir)
    path = sweep_dir / CATALOG_FILE
    if not path.exists():
        raise FileNotFoundError(f"{sweep_dir}: no {CATALOG_FILE}; run `raysweep catalog {sweep_dir}` "
                                "on a sweep directory first")
    return fetch_file(path, f"{hashlib.sha256(str(sweep_dir).encode()).hexdigest()[:16]}-{CATALOG_FILE}")


def open_catalog(sweep_dir: str | StoragePath) -> duckdb.DuckDBPyConnection:
    """A read-only connection to a sweep's catalog that can read its shards wherever they are."""
    con = duckdb.connect(str(local_catalog(sweep_dir)), read_only=True)
    register_filesystems(con, [location(sweep_dir)])
    return con


def _write_catalog(tmp: Path, sweep_dir: StoragePath, freq_files: list[StoragePath],
                   trials_file: StoragePath) -> None:
    with duckdb.connect(str(tmp)) as con:
        register_filesystems(con, [sweep_dir])
        con.execute(_MACROS)
        _create_token_freq(con, freq_files)
        con.execute(f"CREATE TABLE trials AS SELECT * FROM read_parquet('{trials_file}')")
        _add_columns_of_later_versions(con)
        for name, (subdir, *_) in tqdm(SHARD_VIEWS.items(), desc="catalog: shard views", unit="view",
                                       disable=None):  # disable=None: only on a terminal
            shards = complete_shards(sweep_dir / "shards" / subdir)
            _check_shards(name, shards)
            if name == "tokens":
                _create_token_views(con, shards)
            else:
                con.execute(_shard_view(name, shards))
        install_queries(con)
        search = search_settings(sweep_dir)
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


def search_settings(sweep_dir: StoragePath) -> list[str] | None:
    """The objectives of a `search: optuna` sweep, from its spec.yaml; None for a grid. Read
    as written (a full dump of the validated spec), not re-validated: that would import torch."""
    spec_file = sweep_dir / "spec.yaml"
    raw = (yaml.safe_load(spec_file.read_text()) if spec_file.exists() else None) or {}
    if raw.get("search") != "optuna":
        return None
    return list(raw["optuna"]["objectives"])


def trial_objectives(sweep_dir: str | StoragePath, trial_row: pa.Table, freq_file: StoragePath) -> dict:
    """The `trial_objectives` query on one finished trial ({`<split>_<metric>`: value} for every split
    it has), over an in-memory catalog of just that trial: what its driver reports to the search."""
    sweep_dir = location(sweep_dir)
    trial_id = trial_row.column("trial_id")[0].as_py()
    tokens_dir = sweep_dir / "shards" / "tokens"
    shards = sorted(s for split_dir in (tokens_dir.glob("split=*") if tokens_dir.exists() else [])
                    for s in complete_shards(split_dir / f"trial={trial_id}"))
    with duckdb.connect() as con:
        register_filesystems(con, [sweep_dir])
        con.execute(_MACROS)
        _create_token_freq(con, [freq_file])
        con.register("trial_row", trial_row)
        con.execute("CREATE TABLE trials AS SELECT * FROM trial_row")
        _create_token_views(con, shards)
        install_queries(con, query_with_callees("trial_objectives"))
        rows = con.execute("SELECT * FROM trial_objectives()").df().to_dict("records")
    return {f"{row['split']}_{metric}": row[metric] for row in rows for metric in OBJECTIVE_METRICS}


REPORT_SQL = """
WITH overall AS (
    SELECT b.split, tr.scale, tr.vocab_size, tr.regularizer, tr.lr, tr.weight_decay, count(DISTINCT tr.seed) AS n_seeds,
           avg(b.average_loss) AS average_loss, avg(b.balanced_loss) AS balanced_loss
    FROM balanced_vs_average() b JOIN trials tr ON tr.trial_id = b.trial_id
    GROUP BY b.split, tr.scale, tr.vocab_size, tr.regularizer, tr.lr, tr.weight_decay
),
bins AS (
    SELECT b.split, tr.scale, tr.vocab_size, tr.regularizer, tr.lr, tr.weight_decay, b.bin, avg(b.type_mean_loss) AS bin_loss
    FROM bin_loss() b JOIN trials tr ON tr.trial_id = b.trial_id
    GROUP BY b.split, tr.scale, tr.vocab_size, tr.regularizer, tr.lr, tr.weight_decay, b.bin
)
SELECT * FROM overall JOIN bins USING (split, scale, vocab_size, regularizer, lr, weight_decay)
ORDER BY split, scale, vocab_size, regularizer, lr, weight_decay, bin
"""


def report_table(sweep_dir: str | StoragePath) -> pd.DataFrame:
    """Final-step table: per split x scale (x vocabulary size, regularizer and lr, when the sweep has
    more than one) x weight decay, average and token-balanced loss and the token-balanced loss of each
    frequency bin (columns unseen, bin0, bin1, ...), averaged over seeds."""
    with open_catalog(sweep_dir) as con:
        long = con.execute(REPORT_SQL).df()
    if long.empty:
        return long
    keys = ["split", "scale", "vocab_size", "regularizer", "lr", "weight_decay", "n_seeds", "average_loss",
            "balanced_loss"]
    wide = long.pivot_table(index=keys, columns="bin", values="bin_loss").reset_index()
    wide.columns = [c if isinstance(c, str) else ("unseen" if c == -1 else f"bin{int(c)}")
                    for c in wide.columns]
    bins = sorted((c for c in wide.columns if c.startswith("bin")), key=lambda c: int(c[3:]))
    for column in ("vocab_size", "regularizer", "lr"):
        if wide[column].nunique() == 1:
            keys.remove(column)  # a single value: the column would say nothing
    ordered = keys + (["unseen"] if "unseen" in wide.columns else []) + bins
    return wide.sort_values(["split", "scale", "vocab_size", "regularizer", "lr", "weight_decay"])[ordered] \
        .reset_index(drop=True)


def format_report(table: pd.DataFrame) -> str:
    if table.empty:
        return "no final-step token shards in this sweep yet"
    header = ("Final step, mean loss (nats) per token type, averaged over seeds. average = over "
              "occurrences; balanced = over types; binK = types with 3^K <= train count < 3^(K+1).")
    return header + "\n" + table.to_string(index=False, float_format=lambda x: f"{x:.4f}",
                                           na_rep="-")


def pareto_front_table(sweep_dir: str | StoragePath) -> pd.DataFrame:
    """The catalog's `pareto_front` table (a `search: optuna` sweep's; empty for a grid)."""
    with open_catalog(sweep_dir) as con:
        tables = {row[0] for row in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
        return con.execute("SELECT * FROM pareto_front").df() if "pareto_front" in tables else pd.DataFrame()
