"""One self-contained HTML page per sweep, from the template `templates/report.html.j2`: figures
embedded as base64 PNG, key tables, the spec and every trial's status. Opens in a browser with no
server."""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path

import jinja2
from markupsafe import Markup

from raysweep.catalog.connect import connect
from raysweep.catalog.queries import run_query
from raysweep.present.figures import write_figures
from raysweep.present.report import full_report
from raysweep.store.layout import SweepLayout
from raysweep.store.storage import (StorageError, StoragePath, atomic_write_text, is_remote,
                                    remove_stale_temporaries)

_TEMPLATES = jinja2.Environment(loader=jinja2.PackageLoader("raysweep.present", "templates"),
                                autoescape=True, keep_trailing_newline=True)


def _table(frame) -> Markup:
    """pandas' own HTML (it escapes the cells), marked safe for the template."""
    return Markup(frame.to_html(index=False, float_format=lambda x: f"{x:.4f}", na_rep="-", border=0))


def _not_written(out: StoragePath, layout: SweepLayout, reason: str) -> StorageError:
    return StorageError(f"storage: writing the report page {out} failed ({reason}); the sweep is untouched: "
                        f"write it elsewhere with `raysweep report {layout.root} --html --out FILE`")


def write_html_report(sweep_dir, out: StoragePath | None = None) -> StoragePath:
    layout = SweepLayout.at(sweep_dir)
    out = out or layout.report_page
    if not is_remote(out) and not Path(out).parent.is_dir():  # a mistyped --out: say so before drawing the figures
        raise _not_written(out, layout, f"{Path(out).parent} is not a directory")
    with connect([layout]) as con:
        trials = run_query(con, "report_trials").df()
        table1 = run_query(con, "balanced_vs_average_ci").df()  # Table 1, as `raysweep tables` writes it
        excess = run_query(con, "report_excess").df()
    try:
        with tempfile.TemporaryDirectory() as figures_dir:
            figures = [{"name": path.stem, "png_base64": base64.b64encode(path.read_bytes()).decode()}
                       for path in write_figures(layout, Path(figures_dir), formats=("png",))]  # no SVG to drop
    except OSError as exc:  # the figures pass through a local temp dir on the way into the page
        raise _not_written(out, layout, f"drawing its figures under {tempfile.gettempdir()}: "
                                        f"{exc.strerror or exc}") from exc
    spec = layout.spec_file.read_text() if layout.spec_file.exists() else "(no spec.yaml)"
    page = _TEMPLATES.get_template("report.html.j2").render(
        name=layout.name, report=full_report(layout), table1=_table(table1),
        excess=_table(excess), figures=figures, trials=_table(trials), spec=spec)
    try:
        atomic_write_text(out, page)
    except OSError as exc:  # disk full, read-only: one line after a sweep's summary, not a traceback
        remove_stale_temporaries(out)  # the half-written temporary
        raise _not_written(out, layout, exc.strerror or str(exc)) from exc
    return out
