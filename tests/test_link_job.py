"""A job with a link (config ``link``): every row in the link's units, read back as g(terms)."""

from pathlib import Path

import numpy as np
import pytest

import spex_ray
from pipelines.config import ConfigError, config_from_dict
from connectors.backends.vader import VaderBackend
from pipelines.executor import LocalExecutor
from pipelines.inputs import load_examples
from pipelines.method import MethodSpec
from pipelines.parts import read_parts
from pipelines.runner import run_job
from pipelines.schema import EXPLANATION_SCHEMA
from spex_ray import Interactions, faithfulness, uniform_masks


def _config(output: Path, **changes):
    return config_from_dict({
        "input": {"path": "package://connectors/data/demo_reviews.jsonl"}, "backend": {"name": "vader"},
        "budget": 600, "holdout": 100, "indices": ["fourier", "fbii"], "output": str(output), "progress": False,
        **changes,
    })


def _rows(output: Path) -> list[dict]:
    return read_parts(output / "explanations", EXPLANATION_SCHEMA).to_pylist()


def test_a_linked_job_writes_its_link_and_its_rows_predict_through_it(tmp_path):
    summary = run_job(_config(tmp_path / "out", link="algebraic"), limit=4, executor=LocalExecutor)
    assert summary.examples_ok == 4
    rows = _rows(tmp_path / "out")
    assert {row["link"] for row in rows} == {"algebraic"}
    fourier = next(row for row in rows if row["index"] == "fourier")
    linked = Interactions.from_row(fourier)
    assert linked.link == "algebraic"
    # the stored R² is the output's own: g(terms) against VADER on the held-out masks
    plain = linked.with_link("identity")
    masks = uniform_masks(linked.n, 50, seed=1)
    assert np.all(np.abs(linked.predict(masks)) < 1) and not np.allclose(linked.predict(masks), plain.predict(masks))
    frame = spex_ray.read_explanations(tmp_path / "out", index="fbii")
    assert set(frame["link"]) == {"algebraic"}


def test_a_job_without_a_link_keeps_its_hash_and_writes_identity(tmp_path):
    plain, linked = _config(tmp_path / "a"), _config(tmp_path / "a", link="algebraic")
    assert "link" not in plain.result_config() and plain.result_hash() != linked.result_hash()
    run_job(_config(tmp_path / "out"), limit=1, executor=LocalExecutor)
    assert {row["link"] for row in _rows(tmp_path / "out")} == {"identity"}


def test_an_unknown_link_is_a_config_error_naming_the_key(tmp_path):
    with pytest.raises(ConfigError, match="'link' must be one of identity, logit, algebraic; got 'probit'"):
        _config(tmp_path / "out", link="probit")


def test_values_outside_the_links_range_make_error_rows_that_say_so(tmp_path):
    run_job(_config(tmp_path / "out", link="logit"), limit=2, executor=LocalExecutor)
    rows = _rows(tmp_path / "out")
    assert len(rows) == 4 and all(row["status"] == "error" for row in rows)
    assert all("link 'logit' needs values in [0, 1]; got values from -0." in row["error"] for row in rows)


def test_a_rows_r2_is_measured_in_the_outputs_units(tmp_path):
    config = _config(tmp_path / "out", link="algebraic")
    run_job(config, limit=1, executor=LocalExecutor)
    row = next(row for row in _rows(tmp_path / "out") if row["index"] == "fourier")
    example = next(load_examples(config, limit=1))
    masks = MethodSpec.from_config(config).layout(example.n).holdout_masks()
    scores = np.array([score.value for score in VaderBackend().score(example, masks)])
    linked = Interactions.from_row(row)
    assert row["fit_r2"] == pytest.approx(faithfulness(linked, masks, scores))
    assert faithfulness(linked.with_link("identity"), masks, scores) < row["fit_r2"] - 0.03  # units differ


def test_adaptive_budgets_judge_their_stages_in_the_links_space(tmp_path):
    summary = run_job(_config(tmp_path / "out", link="algebraic", adaptive=True, budget=3000), limit=2,
                      executor=LocalExecutor)
    assert summary.examples_ok == 2
    rows = [row for row in _rows(tmp_path / "out") if row["index"] == "fourier"]
    assert all(row["link"] == "algebraic" and row["fit_r2"] > 0.9 for row in rows)
    assert all(row["num_queries"] < 3000 for row in rows)  # these short reviews stop before the cap
