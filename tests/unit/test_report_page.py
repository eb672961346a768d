"""The HTML page of `raysweep report --html`, opened in headless Chromium (tests/browser.py): every figure
decodes, no console error, no request leaves the file, the tables are there. No Ray: a synthetic sweep."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from raysweep.catalog.build import build_catalog
from raysweep.present.figures import FIGURES
from raysweep.store.layout import SweepLayout
from tests.browser import open_report_page
from tests.conftest import run_cli_in_process
from tests.synthetic_sweep import write_synthetic_sweep


def test_report_html_page_opens_whole_in_a_browser(tmp_path, capsys):
    sweep = write_synthetic_sweep(tmp_path / "runs" / "page")  # λ = 0 among its weight decays: every figure draws
    build_catalog(sweep)
    code, stdout, stderr = run_cli_in_process(["report", "--html", str(sweep)], capsys)
    assert (code, stderr) == (0, "")
    page_file = Path(stdout.strip().splitlines()[-1])
    assert page_file == SweepLayout.at(sweep).report_page and page_file.is_file()

    seen = open_report_page(page_file, tmp_path / "report.png")
    assert set(seen.figures) == set(FIGURES), seen.figures
    assert len(seen.tables) == 3, seen.tables  # Table 1, excess loss over λ = 0, trials
    assert all(seen.tables) and any("trial_id" in headers for headers in seen.tables), seen.tables
    trial_ids = pq.read_table(SweepLayout.at(sweep).trials_file).column("trial_id").to_pylist()
    assert all(trial_id in seen.text for trial_id in trial_ids)
