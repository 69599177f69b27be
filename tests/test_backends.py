import itertools
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from connectors import Backend, Example, Score, build_backend
from connectors.backends.fake import DIE_MARKER, FakeBackend
from connectors.base import BACKENDS, RateLimits, backend_class, check_masks

ROOT = Path(__file__).resolve().parents[1]
SPEC = {"name": "fake", "terms": [[[0, 3], 1.5], [[2], -0.7]], "constant": 0.2, "noise": 0.0, "seed": 0}
EXAMPLE = Example.from_text("ex", "one two three four five")


def _all_masks(n):
    return np.array(list(itertools.product([False, True], repeat=n)), dtype=bool)


def test_fake_computes_the_planted_fourier_function_exactly():
    backend = build_backend(SPEC)
    masks = _all_masks(EXAMPLE.n)
    values = np.array([s.value for s in backend.score(EXAMPLE, masks)])
    x = masks.astype(int)
    expected = 0.2 + 1.5 * (-1.0) ** (x[:, 0] + x[:, 3]) - 0.7 * (-1.0) ** x[:, 2]
    np.testing.assert_array_equal(values, expected)
    # the Fourier transform over all 2^n masks recovers exactly the planted coefficients
    for k in _all_masks(EXAMPLE.n):
        coefficient = np.mean(values * (-1.0) ** (x @ k.astype(int)))
        planted = {(): 0.2, (0, 3): 1.5, (2,): -0.7}.get(tuple(np.flatnonzero(k)), 0.0)
        assert coefficient == pytest.approx(planted, abs=1e-12)


def test_fake_noise_is_a_deterministic_function_of_the_mask():
    backend = build_backend({**SPEC, "noise": 0.5, "seed": 3})
    masks = _all_masks(EXAMPLE.n)
    values = np.array([s.value for s in backend.score(EXAMPLE, masks)])
    again = np.array([s.value for s in backend.score(EXAMPLE, masks[::-1])])[::-1]
    np.testing.assert_array_equal(values, again)
    signal = backend.signal(masks)
    assert 0.2 < np.std(values - signal) < 1.0
    other_seed = build_backend({**SPEC, "noise": 0.5, "seed": 4}).score(EXAMPLE, masks[:4])
    assert [s.value for s in other_seed] != values[:4].tolist()
    raw = json.loads(backend.score(EXAMPLE, masks[:1])[0].raw)
    assert raw["signal"] + raw["noise"] == pytest.approx(values[0])


def test_fake_planted_failures():
    failing = [[0, 1, 2, 3, 4]]
    masks = np.array([[1, 0, 1, 0, 1], [1, 1, 1, 1, 1]], dtype=bool)
    with pytest.raises(RuntimeError, match="planted failure for query row 1"):
        build_backend({**SPEC, "fail_queries": failing}).score(EXAMPLE, masks)
    scores = build_backend({**SPEC, "fail_queries": failing, "fail_mode": "error"}).score(EXAMPLE, masks)
    assert scores[0].error is None and scores[0].value is not None
    assert scores[1].value is None and scores[1].error == "planted failure"
    assert build_backend({**SPEC, "fail_queries": failing}).score(EXAMPLE, masks[:1])[0].error is None


def test_fake_sleeps_per_batch():
    backend = build_backend({**SPEC, "sleep_per_batch_s": 0.05})
    start = time.perf_counter()
    backend.score(EXAMPLE, _all_masks(EXAMPLE.n)[:3])
    backend.score(EXAMPLE, _all_masks(EXAMPLE.n)[:3])
    assert time.perf_counter() - start >= 0.1


def _run_fake(spec, batches, rows=3):
    code = textwrap.dedent(
        f"""
        import json, numpy as np
        from connectors import Example, build_backend
        backend = build_backend(json.loads({json.dumps(json.dumps(spec))}))
        example = Example.from_text("ex", "one two three four five")
        for _ in range({batches}):
            backend.score(example, np.ones(({rows}, 5), dtype=bool))
        """
    )
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_fake_counter_file_counts_rows_across_processes(tmp_path):
    counter = tmp_path / "calls.txt"
    spec = {**SPEC, "counter_path": str(counter)}
    for _ in range(2):
        assert _run_fake(spec, batches=2, rows=3).returncode == 0
    build_backend(spec).score(EXAMPLE, np.ones((4, 5), dtype=bool))
    assert counter.read_text().split() == ["3", "3", "3", "3", "4"]


def test_fake_dies_once_after_k_batches(tmp_path):
    counter = tmp_path / "calls.txt"
    spec = {**SPEC, "counter_path": str(counter), "die_after_batches": 2, "die_marker_dir": str(tmp_path)}
    first = _run_fake(spec, batches=4)
    assert first.returncode == 1, first.stderr
    assert (tmp_path / DIE_MARKER).exists()
    assert counter.read_text().split() == ["3", "3"]
    second = _run_fake(spec, batches=4)
    assert second.returncode == 0, second.stderr
    assert counter.read_text().split() == ["3"] * 6


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"terms": [[[0, 0], 1.0]]}, "repeats a feature index"),
        ({"terms": [[[0], "x"]]}, "coefficient must be a number"),
        ({"terms": [[[-1], 1.0]]}, "non-negative integer"),
        ({"terms": [[0, 1.0, 2]]}, r"terms\[0\] must be"),
        ({"noise": -1}, "noise must be >= 0"),
        ({"fail_mode": "explode"}, "unknown fail_mode"),
        ({"die_after_batches": 1}, "must be given together"),
    ],
)
def test_fake_rejects_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        build_backend({**SPEC, **options})


def test_fake_rejects_masks_too_short_for_its_terms():
    with pytest.raises(ValueError, match="n >= 4"):
        FakeBackend(terms=[[[3], 1.0]]).score(Example.from_text("e", "a b"), np.ones((1, 2), dtype=bool))


def test_build_backend_errors():
    with pytest.raises(ValueError, match="mapping"):
        build_backend("vader")
    with pytest.raises(ValueError, match="needs a 'name'"):
        build_backend({"strategy": "remove"})
    with pytest.raises(ValueError, match="unknown backend 'gpt5'; known backends: fake, openai"):
        build_backend({"name": "gpt5"})
    with pytest.raises(ValueError, match=r"unknown option 'temperature'; allowed options: name, mask_token, strategy"):
        build_backend({"name": "vader", "temperature": 0.0})


def test_build_backend_names_the_extra_to_install(tmp_path, monkeypatch):
    (tmp_path / "needs_missing_dep.py").write_text("import spex_ray_no_such_package\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name, extra in [("openai", "openai"), ("transformers", "hf"), ("vllm", "vllm")]:
        monkeypatch.setitem(BACKENDS, name, "needs_missing_dep:Backend")
        with pytest.raises(ImportError, match=rf"backend '{name}' needs the {extra} extra: pip install 'spex-ray\[{extra}\]'"):
            build_backend({"name": name})
        sys.modules.pop("needs_missing_dep", None)
    monkeypatch.setitem(BACKENDS, "openai", "connectors.no_such_module:Backend")
    with pytest.raises(ImportError, match="registered as 'connectors.no_such_module:Backend' but that module is missing"):
        build_backend({"name": "openai"})


class _Constant(Backend):
    name = "constant"

    def __init__(self, *, value: float) -> None:
        self.value = value
        self.closed = False

    def _score(self, example, keep):
        return [Score(value=self.value, raw="{}") for _ in keep]

    def close(self):
        self.closed = True


def test_registry_is_extensible_and_checks_required_options(monkeypatch):
    monkeypatch.setitem(BACKENDS, "constant", f"{__name__}:_Constant")
    with pytest.raises(ValueError, match="backend 'constant' needs option 'value'"):
        build_backend({"name": "constant"})
    with build_backend({"name": "constant", "value": 2.0}) as backend:
        assert backend.identity() == {"backend": "constant"}
        assert [s.value for s in backend.score(EXAMPLE, np.ones((2, 5), dtype=bool))] == [2.0, 2.0]
    assert backend.closed


def test_example_from_text():
    example = Example.from_text("e1", "Not good. Not bad!", "sentences", target="positive")
    assert example.features == ("Not good.", "Not bad!")
    assert example.spans == ((0, 9), (10, 18))
    assert example.n == 2 and example.target == "positive" and example.question is None
    assert Example("e1", example.text, ["Not good.", "Not bad!"], [[0, 9], [10, 18]]) == Example(
        "e1", example.text, example.features, example.spans
    )
    with pytest.raises(ValueError, match="more than max_features=1"):
        Example.from_text("e2", "a b", max_features=1)


def test_score_checks_the_masks_once_for_every_backend():
    backend = _Constant(value=1.0)
    with pytest.raises(ValueError, match=r"keep must have shape \(B, n\) with n=5"):
        backend.score(EXAMPLE, np.ones((2, 4), dtype=bool))
    with pytest.raises(ValueError, match="boolean or 0/1"):
        backend.score(EXAMPLE, np.full((1, 5), 2))
    assert [s.value for s in backend.score(EXAMPLE, [[0, 1, 0, 1, 1]])] == [1.0]
    assert check_masks(np.array([[1, 0]]), 2).dtype == bool


def test_capabilities_are_declared_by_the_backend_classes():
    assert backend_class("vader").timed_in_process and not backend_class("fake").timed_in_process
    assert backend_class("transformers").makes_targets and backend_class("vllm").makes_targets
    assert not backend_class("fake").makes_targets and not backend_class("vader").streams_scores
    assert backend_class("vllm").gpus_per_replica({"tensor_parallel_size": 4}) == 4
    assert backend_class("vllm").gpus_per_replica({}) == 1 and backend_class("vader").gpus_per_replica({}) == 0
    assert backend_class("fake").shared_limits({}) is None and backend_class("fake").state_dir_option is None
    assert backend_class("fake").option_names() >= {"terms", "noise", "seed"}
    with pytest.raises(TypeError, match="declares makes_targets but defines no target"):
        type("NoTarget", (_Constant,), {"makes_targets": True})


def test_the_openai_backend_declares_its_shared_limits_streaming_and_state_folder():
    pytest.importorskip("openai")
    pytest.importorskip("bpe_openai")
    cls = backend_class("openai")
    assert cls.shared_limits({"rpm": 60}) == RateLimits(rpm=60, tpm=200_000, max_cost_usd=None)
    assert cls.streams_scores and cls.state_dir_option == "batch_state_dir" and cls.gpus_per_replica({}) == 0
