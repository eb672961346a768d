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
from raysweep.store.storage import StoragePath, atomic_write_text

_TEMPLATES = jinja2.Environment(loader=jinja2.PackageLoader("raysweep.present", "templates"),
                                autoescape=True, keep_trailing_newline=True)


def _table(frame) -> Markup:
    """pandas' own HTML (it escapes the cells), marked safe for the template."""
    return Markup(frame.to_html(index=False, float_format=lambda x: f"{x:.4f}", na_rep="-", border=0))


def write_html_report(sweep_dir, out: StoragePath | None = None) -> StoragePath:
    layout = SweepLayout.at(sweep_dir)
    out = out or layout.report_page
    with connect([layout]) as con:
        trials = run_query(con, "report_trials").df()
        table1 = run_query(con, "balanced_vs_average_ci").df()  # Table 1, as `raysweep tables` writes it
        excess = run_query(con, "report_excess").df()
    with tempfile.TemporaryDirectory() as figures_dir:
        figures = [{"name": path.stem, "png_base64": base64.b64encode(path.read_bytes()).decode()}
                   for path in write_figures(layout, Path(figures_dir)) if path.suffix == ".png"]
    spec = layout.spec_file.read_text() if layout.spec_file.exists() else "(no spec.yaml)"
    page = _TEMPLATES.get_template("report.html.j2").render(
        name=layout.name, report=full_report(layout), table1=_table(table1),
        excess=_table(excess), figures=figures, trials=_table(trials), spec=spec)
    atomic_write_text(out, page)
    return out
