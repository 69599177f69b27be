"""shapiq interoperability: round trips of every index, agreement with shapiq's own conversions and
exact values, the SpexRay approximator, shapiq's plots on our values, and the missing-extra error."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

shapiq = pytest.importorskip("shapiq", reason="shapiq is not installed: pip install 'spex-ray[shapiq]'")

from spex_ray import Interactions  # noqa: E402
from spex_ray.shapiq import SHAPIQ_INDEX, SpexRay, from_shapiq, to_shapiq  # noqa: E402

N = 8
WORDS = ["not", "bad", "at", "all", "not", "a", "good", "film"]
FOURIER = Interactions({(): 0.3, (0,): -0.5, (1, 2): 0.25, (0, 1, 3): 0.1, (5,): 0.4, (2, 4, 6, 7): -0.2}, N,
                       feature_names=WORDS)
ORDERS = {"shapley": None, "banzhaf": None, "mobius": None}


def _game(coalitions: np.ndarray) -> np.ndarray:
    return FOURIER.predict(coalitions)


@pytest.mark.parametrize("index", sorted(SHAPIQ_INDEX))
def test_round_trip_keeps_index_values_and_baseline(index):
    ours = FOURIER.to(index, order=ORDERS.get(index, 2))
    values = ours.to_shapiq()
    assert values.index == SHAPIQ_INDEX[index] and values.n_players == N and values.max_order == ours.max_order
    shapiq_baseline = ours[()] if index == "fbii" else FOURIER.baseline_value  # FBII: shapiq's own constant
    assert values.baseline_value == pytest.approx(shapiq_baseline)
    assert dict(values.dict_values) == dict(ours.items())  # values unchanged, () included
    back = Interactions.from_shapiq(values, WORDS)
    assert back == ours and back.index == index and back.max_order == ours.max_order
    assert back.feature_names == tuple(WORDS)
    assert back.baseline_value == (None if index == "fbii" else ours.baseline_value)


def test_sii_carries_its_empty_set_term_and_the_baseline_as_shapiq_exact_computes_them():
    exact = shapiq.ExactComputer(n_players=N, game=_game)
    for index, ours in [("SII", FOURIER.to("sii", order=2)), ("FSII", FOURIER.to("fsii", order=2)),
                        ("STII", FOURIER.to("stii", order=2)), ("FBII", FOURIER.to("fbii", order=2))]:
        expected = exact(index, order=2)
        values = ours.to_shapiq()
        for key in set(expected.dict_values) | set(values.dict_values):
            assert values[key] == pytest.approx(expected[key], abs=1e-9), (index, key)
        assert values.baseline_value == pytest.approx(expected.baseline_value)
    sii = FOURIER.to("sii", order=2)
    assert sii[()] != pytest.approx(sii.baseline_value)  # SII(∅) = sum_S a(S)/(|S|+1), not f(∅)


def test_conversions_match_shapiq_moebius_converter_off_the_empty_set():
    from shapiq.game_theory.moebius_converter import MoebiusConverter

    converter = MoebiusConverter(FOURIER.to("mobius").to_shapiq())
    for index in ["sii", "fsii", "fbii", "stii"]:
        theirs = converter(SHAPIQ_INDEX[index].upper() if index != "stii" else "STII", order=2)
        ours = FOURIER.to(index, order=2)
        for key in set(theirs.dict_values) | set(ours):
            if key:  # shapiq's converter leaves SII's () out (see spex_ray.shapiq)
                assert ours.get(key, 0.0) == pytest.approx(theirs[key], abs=1e-9), (index, key)


def test_conversion_errors():
    with pytest.raises(ValueError, match="shapiq has no 'fourier' index"):
        FOURIER.to_shapiq()
    with pytest.raises(ValueError, match="need a baseline_value"):
        Interactions({(0,): 1.0}, 2, "sii").to_shapiq()
    ksii = shapiq.ExactComputer(n_players=N, game=_game)("k-SII", order=2)
    with pytest.raises(ValueError, match="no spex-ray index for shapiq's 'k-SII'"):
        from_shapiq(ksii)


@pytest.mark.parametrize("index", ["FSII", "k-SII", "SII", "SV", "BV", "FBII", "STII"])
def test_spexray_approximator_recovers_exact_values_of_a_sparse_game(index):
    approximator = SpexRay(N, index, max_order=2, method="spex-soft", random_state=0)
    values = approximator.approximate(1000, _game)
    exact = shapiq.ExactComputer(n_players=N, game=_game)(index, order=1 if index in ("SV", "BV") else 2)
    assert values.index == exact.index and 0 < values.estimation_budget <= 1000
    for key in exact.dict_values:
        if index == "BV" and key == ():
            # ours is f(∅), as ExactComputer.base_generalized_value means to set it; its assignment
            # goes to a copy (``InteractionValues.values`` is a property), leaving BII(∅) there
            assert values[key] == pytest.approx(exact.baseline_value)
            continue
        assert values[key] == pytest.approx(exact[key], abs=1e-8), key
    assert values.baseline_value == pytest.approx(exact.baseline_value)


def test_spexray_top_order_and_default_engine():
    values = SpexRay(N, "FSII", max_order=2, top_order=True, random_state=1).approximate(1000, _game)
    assert values.min_order == 2 and all(len(key) == 2 for key in values.dict_values if values[key])
    assert SpexRay(N).method == "spex-hybrid"


def test_shapiq_plots_draw_our_values():
    import matplotlib

    matplotlib.use("Agg")
    values = FOURIER.to("fsii", order=2).to_shapiq()
    labels = np.array(FOURIER.feature_labels)
    assert values.plot_force(feature_names=labels, show=False) is not None
    assert values.plot_network(feature_names=list(labels), show=False) is not None
    assert FOURIER.to("shapley").to_shapiq().plot_sentence(WORDS, show=False) is not None


def test_missing_shapiq_names_the_pip_command():
    code = (
        "import sys; sys.modules['shapiq'] = None\n"
        "from spex_ray import Interactions\n"
        "try:\n"
        "    Interactions({(0,): 1.0}, 2, 'mobius').to_shapiq()\n"
        "except ImportError as err:\n"
        "    print(err)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "pip install 'spex-ray[shapiq]'" in result.stdout, result.stderr
