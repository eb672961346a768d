"""The generated reference pages (docs/generate.py, `make docs`) are committed as generated: a spec field or
a named query changed without `make docs` fails here."""

from __future__ import annotations

import importlib.util

import pytest

from tests.conftest import REPO


def _generator():
    spec = importlib.util.spec_from_file_location("docs_generate", REPO / "docs" / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENERATE = _generator()


@pytest.mark.parametrize("page", sorted(GENERATE.PAGES))
def test_committed_reference_is_what_make_docs_writes(page):
    committed = REPO / "docs" / "reference" / page
    assert committed.is_file(), f"{committed} is missing: run `make docs`"
    assert committed.read_text() == GENERATE.PAGES[page](), f"{committed} is stale: run `make docs` and commit it"


def test_every_spec_field_and_query_is_in_the_reference():
    from raysweep.catalog.queries import load_queries

    spec_page, sql_page = GENERATE.spec_reference(), GENERATE.sql_reference()
    for path in ("name", "optuna.scheduler", "optuna.space.<name>.low", "cost.usd_per_gpu_hour", "train.lr",
                 "model.configs.<name>.hf"):
        assert f"| `{path}` |" in spec_page, path
    assert all(f"## `{q.name}`" in sql_page for q in load_queries())
    assert "| `train.lr` | float | `0.003` | Peak learning rate. |" in spec_page
