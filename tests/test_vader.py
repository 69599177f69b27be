import json
from pathlib import Path

import numpy as np
import pytest
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

import connectors
from connectors import Example, VaderBackend, build_backend, render

DEMO = Path(connectors.__file__).parent / "data" / "demo_reviews.jsonl"


def _reviews():
    return [json.loads(line) for line in DEMO.read_text().splitlines()]


def test_demo_reviews_are_well_formed():
    reviews = _reviews()
    assert 15 <= len(reviews) <= 30
    assert len({r["id"] for r in reviews}) == len(reviews)
    for review in reviews:
        assert set(review) == {"id", "text", "label"}
        assert review["label"] in ("positive", "negative")
        assert 8 <= len(review["text"].split()) <= 40
    labels = [r["label"] for r in reviews]
    assert labels.count("positive") == labels.count("negative")


@pytest.mark.parametrize("strategy", ["remove", "mask_token"])
def test_values_equal_vader_on_the_rendered_text(strategy):
    analyzer = SentimentIntensityAnalyzer()
    backend = VaderBackend(strategy=strategy, mask_token="[MASK]")
    rng = np.random.default_rng(1)
    for review in _reviews()[:6]:
        example = Example.from_text(review["id"], review["text"], "words")
        keep = rng.random((8, example.n)) < 0.5
        keep[0] = True
        scores = backend.score(example, keep)
        assert len(scores) == len(keep)
        for row, score in zip(keep, scores):
            polarity = analyzer.polarity_scores(render(example.text, example.spans, row, strategy=strategy))
            assert score.value == polarity["compound"]
            assert score.error is None
            assert json.loads(score.raw) == {key: polarity[key] for key in ("neg", "neu", "pos", "compound")}
        assert scores[0].value == analyzer.polarity_scores(review["text"])["compound"]


def test_negation_is_an_interaction():
    backend = VaderBackend()
    example = Example.from_text("neg", "The movie was not good.", "words")
    rows = np.ones((4, example.n), dtype=bool)
    rows[:, [3, 4]] = [[True, True], [True, False], [False, True], [False, False]]
    both, only_not, only_good, neither = (s.value for s in backend.score(example, rows))
    assert both < 0 < only_good
    assert abs((both - neither) - ((only_not - neither) + (only_good - neither))) > 0.5


def test_sentence_features_and_features_without_spans():
    backend = VaderBackend()
    text = "The plot is a mess. But the ending is GREAT!"
    example = Example.from_text("s", text, "sentences")
    assert example.features == ("The plot is a mess.", "But the ending is GREAT!")
    values = [s.value for s in backend.score(example, np.array([[1, 0], [0, 1]], dtype=bool))]
    assert values[0] < 0 < values[1]
    loose = Example("x", text="", features=("not", "good"), spans=None)
    assert backend.score(loose, np.array([[True, True]]))[0].value == VaderBackend().score(
        Example.from_text("y", "not good"), np.array([[True, True]])
    )[0].value


def test_built_from_a_spec_with_identity():
    backend = build_backend({"name": "vader", "strategy": "mask_token", "mask_token": "<unk>"})
    assert isinstance(backend, VaderBackend)
    identity = backend.identity()
    assert identity["backend"] == "vader"
    assert identity["strategy"] == "mask_token"
    json.dumps(identity)
    with pytest.raises(ValueError, match="unknown masking strategy"):
        build_backend({"name": "vader", "strategy": "blur"})
