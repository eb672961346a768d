"""The `raysweep` command: a thin table from subcommands to library functions."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path


def _print_results(layout, command: str, report: bool = False) -> int:
    import ray

    from raysweep.present.summary import print_sweep_summary

    ray.shutdown()  # flushes the workers' log lines now, so the table is the last thing printed
    status = print_sweep_summary(layout, command)
    if report:  # a failed trial too: the page shows what finished and the failure's row; the exit status stays 1
        from raysweep.present.page import write_html_report
        from raysweep.store.storage import StorageError

        try:
            print(write_html_report(layout))
        except StorageError as exc:  # the sweep's own status (1: a trial failed) is not lost to the page's
            print(f"raysweep {command}: error: {exc}", file=sys.stderr)
            return max(status, 2)
    return status


def _plan(args) -> int:
    from raysweep.ops.plan import format_table, plan_json, plan_sweep
    from raysweep.spec.load import load_spec

    spec = load_spec(args.spec, tuple(args.set))
    plan = plan_sweep(spec)
    print(plan_json(plan) if args.format == "json" else format_table(plan, spec))
    return 0


def _sweep(args) -> int:
    if args.dry_run and args.report:
        print("raysweep sweep: error: argument --report: not with --dry-run (nothing runs, so there is no page); "
              "drop one of them", file=sys.stderr)
        return 2
    if args.dry_run:  # before anything below imports Ray
        return _plan(args)
    if args.format is not None:
        print("raysweep sweep: error: argument --format: only with --dry-run (it formats the plan); see "
              "`raysweep sweep --help`", file=sys.stderr)
        return 2
    import tempfile

    from raysweep.ops.jobs import JOB_ENV
    from raysweep.spec.load import load_spec
    from raysweep.store.storage import is_remote
    from raysweep.run.tuner import run_sweep

    spec = load_spec(args.spec, tuple(args.set))
    if os.environ.get(JOB_ENV):
        # A submitted sweep starts in the job's working_dir, which Ray may garbage-collect while the
        # driver runs (seen with several raylets on one host sharing the runtime-env cache); Tune
        # needs a cwd that exists when it finishes. The spec's paths are resolved by now.
        try:
            if is_remote(spec.layout.root):
                os.chdir(tempfile.gettempdir())
            else:
                spec.layout.root.mkdir(parents=True, exist_ok=True)
                os.chdir(spec.layout.root)
        except OSError:
            pass  # run_sweep's storage check says what is wrong, in one line
    return _print_results(run_sweep(spec, verbose=args.verbose), "sweep", args.report)


def _resume(args) -> int:
    from raysweep.run.tuner import resume_sweep

    return _print_results(resume_sweep(args.sweep_dir, verbose=args.verbose), "resume", args.report)


def _catalog(args) -> int:
    from raysweep.catalog.build import build_catalog

    print(build_catalog(args.sweep_dir))
    return 0


def _report(args) -> int:
    from raysweep.catalog.build import build_catalog, is_current
    from raysweep.present.report import full_report
    from raysweep.store.layout import SweepLayout
    from raysweep.store.storage import location

    layout = SweepLayout.at(args.sweep_dir)
    if not is_current(layout):  # none yet, or one an older raysweep built: the catalog is derived data
        build_catalog(layout)
    if args.html:
        from raysweep.present.page import write_html_report

        print(write_html_report(layout, location(args.out) if args.out else None))
        return 0
    print(full_report(layout))
    return 0


def _sql(args) -> int:
    import duckdb

    from raysweep.catalog.connect import connect, read_only_statements

    targets = list(args.targets)
    query = None
    if not _is_dir(targets[-1]):
        last = targets.pop()
        if last.endswith(".sql") and not Path(last).is_file():
            raise FileNotFoundError(f"{last}: no such file; name an existing .sql file or give the query itself")
        query = Path(last).read_text() if last.endswith(".sql") else last
    if not targets:
        raise FileNotFoundError("name at least one sweep directory before the query")
    if query is None:
        return _sql_shell(targets)
    with connect(targets) as con:
        try:
            *before, last = read_only_statements(con, query) or [None]
            for statement in before:
                con.execute(statement)
            relation = con.sql(last.query) if last is not None else None
            if relation is None:
                return 0
            if args.format is None:
                print(relation.df().to_string(index=False))
            elif args.output is None:
                raise FileNotFoundError("--format needs --output FILE")
            else:  # written here, not by DuckDB: its connection may write nothing (raysweep.catalog.sandbox)
                _write_result(relation.to_arrow_table(), args.format, args.output)
        except duckdb.Error as exc:  # DuckDB's message (with its hints) on one line
            print("raysweep sql: error: " + " ".join(str(exc).split()), file=sys.stderr)
            return 2
    return 0


def _write_result(table, fmt: str, output: str) -> None:
    import pyarrow.parquet

    if fmt == "csv":
        table.to_pandas().to_csv(output, index=False)
    elif fmt == "parquet":
        pyarrow.parquet.write_table(table, output)
    else:
        table.to_pandas().to_json(output, orient="records", lines=True)


def _is_dir(target: str) -> bool:
    """A sweep dir argument, local or stored (a query or .sql file is not)."""
    from raysweep.store.storage import StorageError, location

    try:
        return location(target).is_dir()
    except (StorageError, OSError):  # a query that mentions 'x://', or longer than a file name may be
        return False


def _sql_shell(targets: list[str]) -> int:
    """A read-only SQL prompt over the catalog(s): the same locked connection and statement check as a query
    on the command line (the duckdb CLI could not be held to either)."""
    import duckdb

    from raysweep.catalog.build import CatalogError
    from raysweep.catalog.connect import connect, read_only_statements

    with connect(targets) as con:
        print("raysweep sql: read-only; end each statement with ';', Ctrl-D quits. Tables: trials, tokens, "
              "final_tokens, token_types, final_token_types, embeddings, train_metrics, token_freq; "
              "the SQL library: `SELECT * FROM bin_loss()`.")
        pending = ""
        while True:
            try:
                line = input("raysweep> " if not pending else "      ...> ")
            except EOFError:
                print()
                return 0
            pending += line + "\n"
            if not line.rstrip().endswith(";"):
                continue
            try:
                for statement in read_only_statements(con, pending):
                    relation = con.sql(statement.query)
                    if relation is not None:
                        relation.show()
            except (duckdb.Error, CatalogError) as exc:
                print("error: " + " ".join(str(exc).split()))
            pending = ""


def _plot(args) -> int:
    from raysweep.present.figures import DEFAULT_FORMATS, write_figures

    from raysweep.store.storage import location

    formats = (args.format,) if args.format else DEFAULT_FORMATS
    for path in write_figures(args.sweep_dir, location(args.out) if args.out else None, formats):
        print(path)
    return 0


def _tables(args) -> int:
    from raysweep.present.tables import write_tables
    from raysweep.store.layout import SweepLayout

    for path in write_tables(args.sweep_dir, args.out or SweepLayout.at(args.sweep_dir).tables_dir):
        print(path)
    return 0


def _verify(args) -> int:
    from raysweep.ops.verify import verify_sweep
    from raysweep.run.preflight import load_prepared, load_sweep_spec

    spec = load_sweep_spec(args.sweep_dir)
    report = verify_sweep(spec, load_prepared(spec))
    print("\n".join(report.lines()))
    return 0 if report.ok else 1


def _status(args) -> int:
    if "://" not in args.sweep_dir and not Path(args.sweep_dir).exists() \
            and args.sweep_dir.startswith("raysweep-"):
        from raysweep.ops.jobs import job_status  # a job id from `raysweep submit`

        print(job_status(args.sweep_dir, args.address))
        return 0
    from raysweep.ops.status import UNFINISHED, format_status, trial_status

    frame = trial_status(args.sweep_dir)
    if not args.watch:
        print(format_status(frame))
        return 0
    try:
        while True:
            print("\x1b[H\x1b[2J" + format_status(frame), flush=True)  # redraw in place (cursor home, clear)
            if not frame.status.isin(UNFINISHED).any():
                return 0
            time.sleep(args.interval)
            frame = trial_status(args.sweep_dir)
    except KeyboardInterrupt:
        return 0


def _submit(args) -> int:
    from raysweep.ops.jobs import submit

    job_id = submit(Path(args.spec), tuple(args.set), args.address)
    print(job_id)
    print(f"follow it: raysweep logs {job_id} --follow; raysweep status {job_id}", file=sys.stderr)
    return 0


def _logs(args) -> int:
    from raysweep.ops.jobs import job_logs

    job_logs(args.job_id, args.address, args.follow)
    return 0


def _export(args) -> int:
    from raysweep.models.export import export_trial

    print(export_trial(args.sweep_dir, args.trial, args.out_dir, args.step))
    return 0


def _cluster(args) -> int:
    from raysweep.ops.cluster import validate_cluster_file

    failed = 0
    for path in args.files:
        problems = validate_cluster_file(Path(path))
        failed += bool(problems)
        print("\n".join(f"{path}: {p}" for p in problems) if problems else f"{path}: ok",
              file=sys.stderr if problems else sys.stdout)
    return 2 if failed else 0


# name -> (handler, help, positional args)
COMMANDS = {
    "sweep": (_sweep, "run (or resume) the sweep of a spec YAML and print the report", ["spec"]),
    "plan": (_plan, "start nothing; print each trial's parameters, tokens, FLOPs, eval rows and Parquet bytes, "
                    "peak memory per worker (fits cost.gpu?), GPU-hours and cost, and the total", ["spec"]),
    "submit": (_submit, "submit the sweep of a spec YAML to a Ray cluster as a Ray Job; prints the job id",
               ["spec"]),
    "logs": (_logs, "print (--follow: tail) the driver log of a submitted sweep", ["job_id"]),
    "resume": (_resume, "finish an interrupted sweep from its Tune state", ["sweep_dir"]),
    "catalog": (_catalog, "rebuild catalog.duckdb of a sweep dir", ["sweep_dir"]),
    "report": (_report, "print the frequency-bin table of a sweep from DuckDB (--html: a page)",
               ["sweep_dir"]),
    "sql": (_sql, "run SQL on one or more sweep catalogs, read-only (no query: a shell)", []),
    "plot": (_plot, "write the study's figures (PNG and SVG; --format: one of them, or PDF)", ["sweep_dir"]),
    "tables": (_tables, "write the study's tables (CSV each, and tables.md)", ["sweep_dir"]),
    "status": (_status, "every trial's state, step of steps, training loss, tokens/s, ETA, restarts and "
                        "error, and the sweep's ETA (--watch: live); or a submitted job's state", ["sweep_dir"]),
    "export": (_export, "write a trial's model (newest complete checkpoint, or --step) as a transformers "
                        "model dir with its tokenizer", ["sweep_dir", "trial", "out_dir"]),
    "cluster": (_cluster, "validate cluster configs offline: `raysweep cluster validate clusters/*.yaml`",
                ["action"]),
    "verify": (_verify, "check finished trials' shards and checkpoints against their manifests "
                        "(exit 1 on any problem)", ["sweep_dir"]),
}


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors on one line like every other raysweep error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="raysweep", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (handler, help_text, positionals) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text)
        for positional in positionals:
            if positional == "action":
                sub.add_argument("action", choices=["validate"])
            else:
                sub.add_argument(positional)
        if name == "sql":
            sub.add_argument("targets", nargs="+", metavar="SWEEP_DIR... [QUERY | FILE.sql]")
            sub.add_argument("--format", choices=["csv", "parquet", "json"])
            sub.add_argument("--output", help="file for --format")
        if name in ("submit", "logs", "status"):
            sub.add_argument("--address", help="Ray Jobs API, e.g. http://127.0.0.1:8265 (default: "
                                               "$RAY_API_SERVER_ADDRESS, else that)")
        if name == "logs":
            sub.add_argument("--follow", action="store_true", help="tail until the job ends")
        if name == "status":
            sub.add_argument("--watch", action="store_true",
                             help="redraw every --interval seconds until no trial is left to run (Ctrl-C: stop)")
            sub.add_argument("--interval", type=_positive_seconds, default=5.0, metavar="SECONDS",
                             help="seconds between redraws with --watch (default 5)")
        if name == "cluster":
            sub.add_argument("files", nargs="+", metavar="CLUSTER.yaml")
        if name == "plot":
            sub.add_argument("--out", help="directory for the figures (default <sweep>/figures)")
            # the choices repeat figures.FORMATS: importing matplotlib here would slow every command's start
            sub.add_argument("--format", choices=["png", "svg", "pdf"],
                             help="write only this format (default: PNG and SVG each)")
        if name == "tables":
            sub.add_argument("--out", help="directory for the tables (default <sweep>/tables)")
        if name == "export":
            sub.add_argument("--step", type=int, help="the checkpoint's step (default: the newest complete one)")
        if name == "report":
            sub.add_argument("--html", action="store_true", help="write a self-contained HTML page")
            sub.add_argument("--out", help="HTML file (default <sweep>/report.html)")
        if name in ("sweep", "resume"):
            sub.add_argument("-v", "--verbose", action="store_true",
                             help="show Ray's INFO lines, Tune's trial table and every worker's output (tracebacks "
                                  "of planned restarts too); default: one progress line per running trial")
            sub.add_argument("--report", action="store_true",
                             help="after the summary, write the self-contained HTML page <sweep>/report.html (as "
                                  "`raysweep report --html`) and print its path; written when a trial failed too")
        if name == "sweep":
            sub.add_argument("--dry-run", action="store_true",
                             help="start nothing: print the plan, as `raysweep plan` does (with --format)")
        if name in ("plan", "sweep"):
            sub.add_argument("--format", choices=["table", "json"],
                             help="the plan as an aligned table (default) or one JSON object"
                                  + (" (with --dry-run)" if name == "sweep" else ""))
        if "spec" in positionals:
            sub.add_argument("--set", action="append", default=[], metavar="A.B=VALUE",
                             help="override a spec field, value parsed as YAML (repeatable)")
        sub.set_defaults(handler=handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from raysweep.catalog.build import CatalogError
    from raysweep.data.corpus import CorpusError
    from raysweep.ops.jobs import JobError
    from raysweep.spec.errors import SpecError, SweepDirError
    from raysweep.store.storage import StorageError

    try:
        return args.handler(args)
    except (SpecError, CorpusError, SweepDirError, CatalogError, JobError, StorageError,
            FileNotFoundError) as exc:
        if os.environ.get("RAYSWEEP_TRACEBACK"):  # for bug reports: the whole story, not one line
            raise
        print(f"raysweep {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C, while Tune was already stopping after the first
        resume = "; `raysweep resume SWEEP_DIR` continues the sweep" if args.command in ("sweep", "resume") else ""
        print(f"raysweep {args.command}: interrupted{resume}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
