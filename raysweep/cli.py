"""The `raysweep` command: a thin table from subcommands to library functions."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _print_results(sweep_dir: Path) -> None:
    import ray

    from raysweep.catalog import build_catalog, format_report, report_table

    ray.shutdown()  # flushes the workers' log lines now, so the table is the last thing printed
    catalog = build_catalog(sweep_dir)
    print(format_report(report_table(sweep_dir)))
    print(f"\nsweep dir: {sweep_dir}\ncatalog:   {catalog}")


def _sweep(args) -> int:
    from raysweep.config import load_spec
    from raysweep.sweep import run_sweep

    _print_results(run_sweep(load_spec(args.spec, tuple(args.set))))
    return 0


def _resume(args) -> int:
    from raysweep.sweep import resume_sweep

    _print_results(resume_sweep(Path(args.sweep_dir)))
    return 0


def _catalog(args) -> int:
    from raysweep.catalog import build_catalog

    print(build_catalog(Path(args.sweep_dir)))
    return 0


def _report(args) -> int:
    from raysweep.catalog import CATALOG_FILE, build_catalog, format_report, report_table

    sweep_dir = Path(args.sweep_dir)
    if not (sweep_dir / CATALOG_FILE).exists():
        build_catalog(sweep_dir)
    print(format_report(report_table(sweep_dir)))
    return 0


# name -> (handler, help, positional args)
COMMANDS = {
    "sweep": (_sweep, "run (or resume) the sweep of a spec YAML and print the report", ["spec"]),
    "resume": (_resume, "finish an interrupted sweep from its Tune state", ["sweep_dir"]),
    "catalog": (_catalog, "rebuild catalog.duckdb of a sweep dir", ["sweep_dir"]),
    "report": (_report, "print the frequency-bin table of a sweep from DuckDB", ["sweep_dir"]),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raysweep", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (handler, help_text, positionals) in COMMANDS.items():
        sub = commands.add_parser(name, help=help_text)
        for positional in positionals:
            sub.add_argument(positional)
        if "spec" in positionals:
            sub.add_argument("--set", action="append", default=[], metavar="A.B=VALUE",
                             help="override a spec field, value parsed as YAML (repeatable)")
        sub.set_defaults(handler=handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from raysweep.config import SpecError
    from raysweep.data.corpus import CorpusError
    from raysweep.sweep import SweepDirError

    try:
        return args.handler(args)
    except (SpecError, CorpusError, SweepDirError, FileNotFoundError) as exc:
        print(f"raysweep {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
