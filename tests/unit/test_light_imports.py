"""What a notebook or a spec check loads: parsing and validating a spec, and `import raysweep`, need
neither torch, transformers nor ray (each is seconds to import and absent on a laptop without them)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from raysweep.catalog.build import build_catalog
from raysweep.catalog.connect import connect
from tests.synthetic_sweep import write_synthetic_sweep

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "transformers", "ray", "datasets", "duckdb")


def test_spec_parsing_and_validation_import_no_torch_transformers_or_ray():
    """every example spec parsed, validated and expanded to its trials → none of the heavy modules loaded."""
    probe = f"""
import json, sys
from pathlib import Path
import raysweep
from raysweep.spec import load_spec
from raysweep.trials.source import trial_source
n = 0
for path in sorted(Path({str(REPO / 'examples')!r}).glob('*.yaml')):
    spec = raysweep.load_spec(path, ['eval.every=7'])
    n += len(trial_source(spec).bounding_points())
print(json.dumps({{"n": n, "loaded": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["n"] > 0 and out["loaded"] == []


def test_t_quantiles_are_exact_for_every_df(tmp_path):
    """the catalog's t_quantile() holds scipy's t(0.975, df) for df 1..1024, the dfs a fixed table
    used to round (21-24, 26-29, > 30) included."""
    sweep = write_synthetic_sweep(tmp_path / "runs" / "s")
    build_catalog(sweep)
    with connect([sweep]) as con:
        df, t = np.array(con.execute("SELECT df, t FROM t_quantile() ORDER BY df").fetchall()).T
    assert df[0] == 1 and len(df) >= 1024 and (np.diff(df) == 1).all()
    assert np.allclose(t, stats.t.ppf(0.975, df), rtol=1e-12, atol=0)
    assert t[22 - 1] == pytest.approx(2.0739, abs=1e-4) and t[40 - 1] == pytest.approx(2.0211, abs=1e-4)
