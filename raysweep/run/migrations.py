"""Sweep dirs written by earlier raysweep versions: the rules for their specs, trials and trial tables.
(A catalog of another version is derived data: `raysweep report` rebuilds it, raysweep.catalog.build.)

- Before the regularizer axes, trial ids did not name a non-default decay policy or dropout: such a
  sweep cannot continue under this version's ids (`check_ids_unchanged`).
- Trials rows of before the axes lack their columns and spell the regularizer differently
  (`current_regularizer`, `upgrade_trials_table`); rows of before the vocab axis lack `vocab_size`.
- Trials trained before the redesign (another lr schedule, 2 FSDP2 ranks), or before models were
  initialized unit by unit from the meta device (another init for the same seed), cannot be continued
  (`check_trained_by_this_version`); their results still report.
"""

from __future__ import annotations

import json

import pyarrow as pa

from raysweep.models import INIT_SCHEME
from raysweep.spec.errors import SweepDirError
from raysweep.spec.schema import REGULARIZER_AXES
from raysweep.store.layout import SweepLayout, token_freq_file
from raysweep.store.storage import read_parquet_metadata
from raysweep.trials.point import TrialPoint

# trials columns added after the first release, with the value they had before (plain AdamW)
_LATER_TRIALS_COLUMNS = {"decay_policy": "all_matrices", "freq_decay_alpha": 0.0, "label_smoothing": 0.0,
                         "dropout": 0.0, "vocab_size": None, "model_source": None, "counting_corpus": None}


def check_ids_unchanged(layout: SweepLayout, old_raw: dict) -> None:
    """Trial ids name a non-default decay policy or dropout since the regularizer axes exist; a
    sweep written before them with such a setting has its results under the old ids."""
    if "freq_decay_alpha" in (old_raw.get("train") or {}):
        return  # written by a version with the axes: same ids
    policy = (old_raw.get("train") or {}).get("decay_policy", "all_matrices")
    dropout = (old_raw.get("model") or {}).get("dropout", 0.0)
    if policy != "all_matrices" or dropout:
        raise SweepDirError(f"{layout.root}: was written by an older raysweep whose trial ids did not name "
                            f"decay_policy={policy!r} / dropout={dropout!r}; finish it with that version, or "
                            "run the spec under another `name`")


def check_trained_by_this_version(layout: SweepLayout) -> None:
    """A sweep dir whose trials an earlier raysweep trained cannot continue here: before the redesign
    (issue 22) trials ran another lr schedule (lr/warmup at the first step, the floor at the last) on
    2 FSDP2 ranks, and before issue 23 a seed initialized its model otherwise (one global RNG stream, not
    unit by unit: raysweep.models.init), so a resumed or added trial would not be comparable with them;
    and Tune's saved state names modules that no longer exist. Their results still report, verify and
    query. A worker group of this version records `init` in attempts.jsonl."""
    for attempts in sorted(layout.train_root.glob("*/attempts.jsonl")):
        first = attempts.read_text().splitlines()[:1]
        if first and json.loads(first[0]).get("init") != INIT_SCHEME:
            raise SweepDirError(f"{layout.root}: its trials were trained by an earlier raysweep (another init, lr "
                                "schedule or worker layout), so it cannot continue under this version; "
                                "`raysweep report`, `verify` and `sql` still read it; run the spec under "
                                "another `name` to train it anew")
        return


def current_regularizer(row: dict) -> dict:
    """A trials row of an earlier grid with the regularizer columns as this version writes them
    (rows from before the axes lack them), so excess_loss still pairs it with its baseline. A model
    scored from checkpoints (no weight decay known) has no regularizer."""
    if row.get("weight_decay") is None:
        return row
    point = TrialPoint.model_validate({k: row[k] for k in TrialPoint.model_fields
                                       if row.get(k) is not None and k != "lr"})
    return row | {axis: getattr(point, axis) for axis in REGULARIZER_AXES} | {"regularizer": point.regularizer}


def upgrade_trials_table(table: pa.Table, layout: SweepLayout, schema: pa.Schema) -> pa.Table:
    """A trials table of any version in this version's schema: missing columns at their old
    meaning, and a missing vocabulary size read from the trial's data dir."""
    if table.schema.equals(schema) and table.column("vocab_size").null_count == 0:
        return table
    vocab = {}  # data key -> vocabulary size: meta.json's, else token_freq's rows (one per token id)
    for marker in layout.built_data_markers():
        meta = json.loads(marker.read_text())
        vocab[marker.parent.name] = (meta.get("vocab_size")
                                     or read_parquet_metadata(token_freq_file(marker.parent)).num_rows)
    rows = []
    for row in table.to_pylist():
        row = {name: row.get(name, default) for name, default in _LATER_TRIALS_COLUMNS.items()} | row
        if row["vocab_size"] is None:
            row["vocab_size"] = vocab.get(row["data_key"])
        rows.append(current_regularizer(row))
    return pa.Table.from_pylist(rows, schema=schema)
