"""One self-contained HTML page per sweep: figures embedded as base64 PNG, key tables, the spec
and every trial's status. Opens in a browser with no server."""

from __future__ import annotations

import base64
import html
import tempfile
from pathlib import Path

from raysweep.present.report import format_report, report_table
from raysweep.present.figures import write_figures
from raysweep.catalog.connect import connect
from raysweep.store.storage import StoragePath, atomic_write_text, location

_STYLE = ("body{font-family:sans-serif;max-width:1400px;margin:2em auto;padding:0 1em}"
          "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:2px 6px;"
          "text-align:right}img{max-width:100%}pre{background:#f6f6f6;padding:1em;overflow:auto}")


def _table(frame) -> str:
    return frame.to_html(index=False, float_format=lambda x: f"{x:.4f}", na_rep="-", border=0)


def write_html_report(sweep_dir: str | StoragePath, out: StoragePath | None = None) -> StoragePath:
    sweep_dir = location(sweep_dir)
    out = out or SweepLayout.at(sweep_dir).report_page
    with connect([sweep_dir]) as con:
        trials = con.execute("SELECT trial_id, weight_decay, scale, seed, regularizer, n_params, status, "
                             "error FROM trials ORDER BY scale, vocab_size, regularizer, weight_decay, seed").df()
        table1 = con.execute("""SELECT b.split, tr.scale, tr.vocab_size, tr.regularizer, tr.weight_decay,
                count(*) AS n_seeds,
                avg(b.average_loss) AS average_loss, avg(b.balanced_loss) AS balanced_loss,
                avg(b.ratio) AS ratio, avg(b.accuracy) AS accuracy
            FROM balanced_vs_average() b JOIN trials tr ON tr.trial_id = b.trial_id
            GROUP BY ALL ORDER BY ALL""").df()
        excess = con.execute("SELECT * FROM excess_loss_ci() WHERE weight_decay > 0 "
                             "ORDER BY split, scale, vocab_size, regularizer, weight_decay, bin").df()
    sections = [f"<h1>raysweep: {html.escape(sweep_dir.name)}</h1>",
                "<h2>Per frequency bin, final step</h2>",
                f"<pre>{html.escape(format_report(report_table(sweep_dir)))}</pre>",
                "<h2>Average vs token-balanced loss (the paper's Table 1)</h2>", _table(table1),
                "<h2>Excess loss over λ = 0, mean over seeds with 95% CI</h2>", _table(excess)]
    with tempfile.TemporaryDirectory() as figures:
        for path in write_figures(sweep_dir, Path(figures)):
            if path.suffix == ".png":
                encoded = base64.b64encode(path.read_bytes()).decode()
                sections.append(f"<h3>{html.escape(path.stem)}</h3><img src='data:image/png;base64,{encoded}'>")
    spec = (sweep_dir / "spec.yaml").read_text() if (sweep_dir / "spec.yaml").exists() else "(no spec.yaml)"
    sections += ["<h2>Trials</h2>", _table(trials), "<h2>Spec</h2>", f"<pre>{html.escape(spec)}</pre>"]
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>raysweep {html.escape(sweep_dir.name)}" \
           f"</title><style>{_STYLE}</style></head><body>{''.join(sections)}</body></html>"
    atomic_write_text(out, page)
    return out
