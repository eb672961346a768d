"""A sweep dir from someone else is data: SQL stored in its catalog.duckdb never runs, a connection reaches
nothing outside the sweep dirs, and `raysweep sql` only reads (issue 24, line 1)."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pytest

from raysweep.catalog.build import build_catalog
from raysweep.store.layout import SweepLayout
from tests.conftest import run_cli_in_process
from tests.synthetic_sweep import write_synthetic_sweep

SECRET = "s3cr3t-aws-key-42"


@pytest.fixture(scope="module")
def honest(tmp_path_factory) -> Path:
    sweep = write_synthetic_sweep(tmp_path_factory.mktemp("honest") / "runs" / "sweep")
    build_catalog(sweep)
    return sweep


@pytest.fixture
def secret(tmp_path) -> Path:
    path = tmp_path / "credentials"
    path.write_text(SECRET)
    return path


def _copy(honest: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(honest, tmp_path / "runs" / "sent"))


def _tamper(sweep: Path, *statements: str) -> None:
    with duckdb.connect(str(SweepLayout.at(sweep).catalog_file)) as con:
        for statement in statements:
            con.execute(statement)


def _run(argv: list[str], capsys) -> tuple[int, str]:
    code, out, err = run_cli_in_process(argv, capsys)
    return code, out + err


def _everything_shown(sweep: Path, capsys, tmp_path: Path) -> tuple[list[int], str]:
    """Exit codes and all text of report, report --html, tables, plot and sql on the sweep, files included."""
    shown, codes = [], []
    tmp_path.mkdir(exist_ok=True)
    for argv in (["report", str(sweep)], ["report", "--html", str(sweep), "--out", str(tmp_path / "page.html")],
                 ["tables", str(sweep), "--out", str(tmp_path / "tables")],
                 ["sql", str(sweep), "SELECT * FROM tokens LIMIT 3"], ["sql", str(sweep), "SELECT * FROM bin_loss()"],
                 ["sql", str(sweep), "SELECT * FROM trials"]):
        code, text = _run(argv, capsys)
        codes.append(code)
        shown.append(text)
    shown += [p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file() and p.suffix in (".html", ".csv", ".md")]
    return codes, "\n".join(shown)


def test_the_catalog_file_holds_tables_only(honest):
    """Nothing stored in catalog.duckdb is SQL: no view, no macro; the tables are the ones the reader reads."""
    from raysweep.catalog.build import CATALOG_TABLES

    with duckdb.connect(str(SweepLayout.at(honest).catalog_file), read_only=True) as con:
        views = con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal AND NOT temporary").fetchall()
        macros = con.execute("SELECT function_name FROM duckdb_functions() WHERE function_type LIKE '%macro%' "
                             "AND NOT internal AND database_name = current_database()").fetchall()
        tables = {row[0] for row in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert views == [] and macros == [] and tables == set(CATALOG_TABLES)


def test_views_and_macros_stored_in_a_catalog_never_run(honest, secret, tmp_path, capsys):
    """A catalog whose file also holds a view `tokens` and a macro `bin_loss` reading a secret outside the sweep:
    every reader builds its own from the package, and shows the same as for the honest catalog, never the secret."""
    sweep = _copy(honest, tmp_path)
    _tamper(sweep, f"CREATE VIEW tokens AS SELECT content AS stolen FROM read_text('{secret}')",
            f"CREATE MACRO bin_loss() AS TABLE SELECT content AS stolen FROM read_text('{secret}')",
            f"CREATE VIEW trial_panels AS SELECT content AS stolen FROM read_text('{secret}')")
    codes, shown = _everything_shown(sweep, capsys, tmp_path / "out")
    assert codes == [0] * 6 and SECRET not in shown and "stolen" not in shown
    assert "balanced_loss" in shown and "type_mean_loss" in shown  # the real report and library ran


@pytest.mark.parametrize("tampering", [
    "DROP TABLE trials; CREATE VIEW trials AS SELECT *, (SELECT content FROM read_text('{secret}')) AS stolen "
    "FROM (SELECT 1)",
    "DROP TABLE catalog_info; CREATE VIEW catalog_info AS SELECT 3 AS version, content AS stolen "
    "FROM read_text('{secret}')",
    "INSERT INTO shards VALUES ('tokens', '../../credentials')",
    "INSERT INTO shards VALUES ('tokens', '{secret}')",
], ids=["trials-a-view", "catalog_info-a-view", "shard-outside", "shard-absolute"])
def test_a_catalog_that_is_not_tables_only_is_refused_in_one_line(honest, secret, tmp_path, capsys, tampering):
    sweep = _copy(honest, tmp_path)
    shutil.copy(secret, sweep.parent / "credentials")  # where '../../credentials' from a shard dir would land
    _tamper(sweep, *tampering.format(secret=secret).split("; "))
    for argv in (["sql", str(sweep), "SELECT * FROM trials"], ["tables", str(sweep), "--out", str(tmp_path / "t")]):
        code, text = _run(argv, capsys)
        assert code == 2 and SECRET not in text
        assert "rebuild it with `raysweep catalog" in text.strip().splitlines()[-1]


@pytest.mark.parametrize("statement", [
    "COPY (SELECT * FROM trials) TO '{out}/trials.csv'",
    "COPY (SELECT * FROM trials) TO '{sweep}/trials-copy.csv'",  # inside the sweep dir too
    "ATTACH '{out}/other.duckdb' AS other",
    "CREATE TABLE mine AS SELECT 1",
    "INSTALL httpfs",
    "LOAD httpfs",
    "SET enable_external_access = true",
    "PRAGMA enable_profiling",
    "SELECT 1; COPY (SELECT 1) TO '{out}/x.csv'",  # a write after a read: nothing runs
], ids=["copy", "copy-into-sweep", "attach", "create", "install", "load", "set", "pragma", "second-statement"])
def test_sql_refuses_every_write(honest, tmp_path, capsys, statement):
    out = tmp_path / "out"
    out.mkdir()
    before = sorted(p.name for p in honest.iterdir())
    code, text = _run(["sql", str(honest), statement.format(out=out, sweep=honest)], capsys)
    assert code == 2 and "is not read-only" in text.strip().splitlines()[-1]
    assert list(out.iterdir()) == [] and sorted(p.name for p in honest.iterdir()) == before


@pytest.mark.parametrize("targets", [1, 2], ids=["one-sweep", "two-sweeps"])
def test_sql_reads_nothing_outside_the_sweep_dirs(honest, secret, tmp_path, capsys, targets):
    """read_text / read_parquet of a file outside, even through `..`, fail in DuckDB's own sandbox; with two
    sweeps attached (an in-memory database) as with one."""
    other = _copy(honest, tmp_path)
    sweeps = [str(honest), str(other)][:targets]
    for query in (f"SELECT content FROM read_text('{secret}')", f"SELECT * FROM read_text('{honest}/../../credentials')",
                  f"SELECT * FROM read_csv('{secret}')"):
        code, text = _run(["sql", *sweeps, query], capsys)
        assert code == 2 and SECRET not in text and "Permission Error" in text.strip().splitlines()[-1]
    code, text = _run(["sql", *sweeps, "SELECT count(*) AS n FROM tokens"], capsys)
    assert code == 0 and "n" in text


@pytest.mark.parametrize("parent", ["o'neil", "o'neil [1]", "a*b"])
def test_a_sweep_under_quotes_and_glob_characters_reads_the_same(honest, tmp_path, capsys, parent):
    """Paths reach SQL only escaped (a view's file list, ATTACH, the allowed dirs): a sweep under a dir named
    o'neil, or with glob characters, gives the same rows as anywhere else."""
    from raysweep.catalog.connect import connect

    moved = Path(shutil.copytree(honest, tmp_path / parent / "runs" / "sweep"))
    build_catalog(moved)  # its shard list names the files where they are now
    code, text = _run(["report", str(moved)], capsys)
    assert code == 0 and "balanced_loss" in text
    with connect([honest]) as con:
        want = con.execute("SELECT * FROM bin_loss() ORDER BY ALL").fetchall()
    with connect([moved, honest]) as con:  # several sweeps: ATTACH aliases and union views escaped too
        got = con.execute("SELECT * REPLACE (replace(trial_id, 'sweep/', '') AS trial_id) FROM bin_loss() "
                          "WHERE trial_id LIKE 'sweep/%' ORDER BY ALL").fetchall()
    assert len(got) == len(want) > 0
    for row, expected in zip(got, want):  # the same rows; sums may differ in the last bit (their order)
        assert [v for v in row if isinstance(v, str)] == [v for v in expected if isinstance(v, str)]
        assert [v for v in row if not isinstance(v, str)] == pytest.approx(
            [v for v in expected if not isinstance(v, str)], rel=1e-12)


def test_the_sql_prompt_reads_and_refuses_as_a_query_does(honest, tmp_path):
    """`raysweep sql SWEEP` with no query: a prompt on the same locked connection, each statement checked."""
    import subprocess
    import sys

    session = f"COPY (SELECT * FROM trials) TO '{tmp_path / 'out.csv'}';\nSELECT count(*) AS n_trials\n FROM trials;\n"
    result = subprocess.run([sys.executable, "-m", "raysweep.cli", "sql", str(honest)], input=session,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "error: query: COPY is not read-only" in result.stdout and "n_trials" in result.stdout
    assert not (tmp_path / "out.csv").exists()


@pytest.mark.parametrize("fmt", ["csv", "parquet", "json"])
def test_results_leave_through_output_only(honest, tmp_path, capsys, fmt):
    """--format/--output is written by raysweep from the query's rows, not by DuckDB (whose connection may
    write nothing): every format carries the query's columns and rows."""
    import pandas as pd

    out = tmp_path / f"b.{fmt}"
    code, text = _run(["sql", str(honest), "SELECT * FROM balanced_vs_average()", "--format", fmt, "--output",
                       str(out)], capsys)
    assert code == 0, text
    frame = {"csv": pd.read_csv, "parquet": pd.read_parquet, "json": lambda p: pd.read_json(p, lines=True)}[fmt](out)
    assert list(frame.columns[:3]) == ["trial_id", "step", "split"] and len(frame) == 6 * 2
    if fmt == "csv":
        assert out.read_text().startswith("trial_id,step,split,")
