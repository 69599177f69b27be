"""spex_ray.explain_text: a text and a function of texts in, named interactions out."""

import subprocess
import sys

import numpy as np
import pytest

import spex_ray
from spex_ray import explain_text


def _sentiment(texts):
    """+1 for "good"; "bad" alone -1, but "not" with "bad" +1 (an interaction)."""
    values = []
    for text in texts:
        words = set(text.split())
        value = 1.0 * ("good" in words)
        if "bad" in words:
            value += 1.0 if "not" in words else -1.0
        values.append(value)
    return values


def test_words_are_named_features_and_the_pair_is_found():
    result = explain_text("the film is not bad and good", _sentiment, method="spex-hard", b=3)
    assert result.feature_names == ("the", "film", "is", "not", "bad", "and", "good")
    mobius = result.to("mobius")
    assert mobius[(6,)] == pytest.approx(1.0)
    assert mobius[(4,)] == pytest.approx(-1.0)
    assert mobius[(3, 4)] == pytest.approx(2.0)
    assert result.to("fbii", order=2).top(1, names=True)[0][0] == ("not", "bad")


def test_fn_gets_lists_of_masked_texts_and_options_reach_explain():
    seen = []

    def fn(texts):
        assert isinstance(texts, list) and all(isinstance(text, str) for text in texts)
        seen.extend(texts)
        return np.array([len(text) for text in texts], dtype=float)

    text = "One. Two here. Three!"
    result = explain_text(text, fn, "sentences", strategy="mask_token", mask_token="<m>", method="spex-hard", b=2,
                          batch_size=5, index="fbii", order=1)
    assert result.index == "fbii" and result.max_order == 1
    assert result.feature_names == ("One.", "Two here.", "Three!")
    options = [("One.", "<m>"), ("Two here.", "<m>"), ("Three!", "<m>")]
    assert set(seen) <= {f"{a} {b} {c}" for a in options[0] for b in options[1] for c in options[2]}
    assert "<m> <m> <m>" in seen or text in seen


def test_given_spans_and_repeated_words_are_told_apart():
    text = "cat and cat"
    result = explain_text(text, lambda texts: [t.count("cat") for t in texts], "spans",
                          spans=[(0, 3), (4, 7), (8, 11)], method="spex-hard", b=2)
    assert result.feature_labels == ("cat#1", "and", "cat#2")
    assert result.to("mobius")[(0,)] == pytest.approx(1.0) and result.to("mobius")[(2,)] == pytest.approx(1.0)


def test_a_progress_bar_when_asked(capsys):
    explain_text("a b c d", lambda texts: [len(t) for t in texts], method="spex-hard", b=2, progress=True)
    assert "queries" in capsys.readouterr().err
    explain_text("a b c d", lambda texts: [len(t) for t in texts], method="spex-hard", b=2)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: explain_text("   ", _sentiment), ValueError, "empty"),
        (lambda: explain_text("a b", _sentiment, "spans", spans=[(0, 5)]), ValueError, "span 0"),
        (lambda: explain_text("a b c", lambda texts: [1.0], b=2), ValueError, "returned 1 values"),
        (lambda: explain_text("a b c", lambda texts: ["x"] * len(texts), b=2), TypeError, "str"),
    ],
)
def test_bad_input_raises_naming_the_problem(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_the_core_imports_neither_connectors_nor_ray():
    code = ("import sys, spex_ray; spex_ray.explain_text; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'connectors', 'pipelines', 'ray', 'pyarrow', "
            "'pandas', 'sklearn', 'lightgbm', 'torch', 'yaml'}))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "[]\n"
    assert spex_ray.run.__module__ == "pipelines.api"
