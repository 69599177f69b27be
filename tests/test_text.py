import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spex_ray.text import Renderer, featurize, render

TEXT = "  Not good.  But the cast is VERY fun!\n\nWorth it? Yes... 3.5 stars\n"

# texts built from words and whitespace runs, including unicode letters/punctuation and odd spaces
_word = st.text(
    alphabet=st.characters(blacklist_categories=("Zs", "Zl", "Zp", "Cc", "Cs")), min_size=1, max_size=8
)
_space = st.sampled_from([" ", "  ", "\n", "\t", " \n\n ", "\u00a0", "\r\n"])


@st.composite
def texts(draw):
    words = draw(st.lists(_word, min_size=1, max_size=12))
    gaps = draw(st.lists(_space, min_size=len(words) + 1, max_size=len(words) + 1))
    lead = draw(st.booleans())
    trail = draw(st.booleans())
    parts = [gaps[0] if lead else ""]
    for i, word in enumerate(words):
        parts += [word, gaps[i + 1] if (i + 1 < len(words) or trail) else ""]
    return "".join(parts)


def _keep(data, n):
    return np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=bool)


def test_words_keep_punctuation_attached_and_spans_locate_them():
    features, spans = featurize(TEXT, "words")
    assert features == ["Not", "good.", "But", "the", "cast", "is", "VERY", "fun!", "Worth", "it?", "Yes...", "3.5", "stars"]
    assert [TEXT[s:e] for s, e in spans] == features
    assert spans[0] == (2, 5)


def test_sentences_split_on_terminal_punctuation_and_blank_lines():
    features, spans = featurize(TEXT, "sentences")
    assert features == ["Not good.", "But the cast is VERY fun!", "Worth it?", "Yes...", "3.5 stars"]
    assert [TEXT[s:e] for s, e in spans] == features
    text = "First part\n\nSecond part. \"Quoted!\" Third (aside.) end"
    assert featurize(text, "sentences")[0] == ["First part", "Second part.", '"Quoted!"', "Third (aside.)", "end"]


def test_given_spans_are_validated_and_returned():
    text = "Doc A: cats purr. Doc B: dogs bark."
    spans = [(7, 17), (25, 35)]
    features, got = featurize(text, "spans", spans=spans)
    assert features == ["cats purr.", "dogs bark."]
    assert got == spans
    for bad, message in [
        ([(25, 35), (7, 17)], "sorted"),
        ([(7, 17), (10, 20)], "overlaps"),
        ([(7, 7)], "start < end"),
        ([(30, 40)], "<= 35"),
        ([(-1, 3)], "0 <= start"),
        ([("a", 3)], "pair of integers"),
        ([], "no features"),
    ]:
        with pytest.raises(ValueError, match=message):
            featurize(text, "spans", spans=bad)


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
@pytest.mark.parametrize("unit", ["words", "sentences"])
def test_empty_text_is_rejected(text, unit):
    with pytest.raises(ValueError, match="empty or whitespace"):
        featurize(text, unit)


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="unknown feature unit"):
        featurize("a b", "tokens")
    with pytest.raises(ValueError, match="exactly when unit='spans'"):
        featurize("a b", "words", spans=[(0, 1)])
    with pytest.raises(ValueError, match="exactly when unit='spans'"):
        featurize("a b", "spans")
    with pytest.raises(ValueError, match="max_features must be"):
        featurize("a b", "words", max_features=0)
    with pytest.raises(ValueError, match="unknown masking strategy"):
        Renderer("a b", [(0, 1)], strategy="blur")


def test_max_features():
    text = " ".join(["w"] * 1234)
    with pytest.raises(ValueError, match="example has 1234 features, more than max_features=1000"):
        featurize(text, "words", max_features=1000)
    assert len(featurize(text, "words", max_features=1234)[0]) == 1234


def test_remove_collapses_whitespace_and_keeps_leading_and_trailing_text():
    features, spans = featurize(TEXT, "words")
    keep = np.ones(len(features), dtype=bool)
    keep[[0, 3, 12]] = False
    assert render(TEXT, spans, keep) == "  good.  But cast is VERY fun!\n\nWorth it? Yes... 3.5\n"
    assert render(TEXT, spans, np.zeros(len(features), dtype=bool)) == "  \n"
    assert render("a b c", [(0, 1), (2, 3), (4, 5)], np.array([0, 0, 1])) == "c"
    assert render("a b  c", [(0, 1), (2, 3), (5, 6)], np.array([1, 0, 1])) == "a  c"


def test_mask_token_replaces_each_masked_feature():
    features, spans = featurize(TEXT, "sentences")
    keep = np.array([0, 1, 1, 0, 0], dtype=bool)
    expected = "  <m>  But the cast is VERY fun!\n\nWorth it? <m> <m>\n"
    assert render(TEXT, spans, keep, strategy="mask_token", mask_token="<m>") == expected


def test_remove_keeps_template_text_between_given_spans():
    text = "Doc A: cats purr. Doc B: dogs bark."
    spans = [(7, 17), (25, 35)]
    assert render(text, spans, np.array([False, True])) == "Doc A:  Doc B: dogs bark."
    assert render(text, spans, np.array([True, False])) == "Doc A: cats purr. Doc B: "


def test_render_batch_matches_render_and_checks_shapes():
    features, spans = featurize(TEXT, "words")
    renderer = Renderer(TEXT, spans)
    keep = np.random.default_rng(0).random((20, len(features))) < 0.5
    assert renderer.render_batch(keep) == [render(TEXT, spans, row) for row in keep]
    assert renderer.render_batch(keep.astype(np.uint8)) == renderer.render_batch(keep)
    with pytest.raises(ValueError, match="shape"):
        renderer.render(keep)
    with pytest.raises(ValueError, match="shape"):
        renderer.render_batch(keep[:, :3])
    with pytest.raises(ValueError, match="0/1"):
        renderer.render(np.full(len(features), 2))


@settings(max_examples=60, deadline=None)
@given(text=texts(), unit=st.sampled_from(["words", "sentences"]))
def test_all_kept_is_the_original_text(text, unit):
    features, spans = featurize(text, unit)
    assert [text[s:e] for s, e in spans] == features
    assert all(f == f.strip() and f for f in features)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))
    for strategy in ("remove", "mask_token"):
        assert render(text, spans, np.ones(len(features), dtype=bool), strategy=strategy) == text


@settings(max_examples=60, deadline=None)
@given(text=texts(), data=st.data())
def test_words_remove_then_featurize_gives_the_kept_words(text, data):
    features, spans = featurize(text, "words")
    keep = _keep(data, len(features))
    rendered = render(text, spans, keep)
    kept = [f for f, k in zip(features, keep) if k]
    assert rendered.split() == kept
    masked = render(text, spans, keep, strategy="mask_token", mask_token="[MASK]")
    assert masked.split() == [f if k else "[MASK]" for f, k in zip(features, keep)]


@settings(max_examples=60, deadline=None)
@given(text=texts(), data=st.data())
def test_remove_matches_a_reference_implementation(text, data):
    features, spans = featurize(text, "sentences")
    keep = _keep(data, len(features))
    gaps = [text[a:b] for a, b in zip([0] + [e for _, e in spans], [s for s, _ in spans] + [len(text)])]
    kept = [i for i in range(len(features)) if keep[i]]
    expected = gaps[0] + "".join(
        (gaps[i] if j > 0 else "") + features[i] for j, i in enumerate(kept)
    ) + gaps[-1]
    assert render(text, spans, keep) == expected
