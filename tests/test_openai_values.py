import math

import pytest

from connectors.backends.openai_values import (
    LabelValue,
    MalformedResponse,
    TargetValue,
    first_token_top_logprobs,
    label_variants,
    logsumexp,
)


def chat_body(top, token="True"):
    entries = [{"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in top]
    return {"choices": [{"logprobs": {"content": [{"token": token, "logprob": top[0][1], "top_logprobs": entries}]}}]}


def test_label_variants_cover_spacing_and_case():
    assert label_variants("True") == ("True", " True", "true", " true", "TRUE", " TRUE")
    assert set(label_variants("no")) >= {"no", " no", "No", " No", "NO"}


def test_logsumexp_is_stable():
    assert logsumexp([]) == -math.inf
    assert logsumexp([-1000.0, -1000.0]) == pytest.approx(-1000.0 + math.log(2))
    assert logsumexp([math.log(0.2), math.log(0.3)]) == pytest.approx(math.log(0.5))


def test_log_odds_combines_variants_with_logsumexp():
    value = LabelValue(labels=(("True", label_variants("True")), ("False", label_variants("False"))))
    body = chat_body([("True", math.log(0.5)), (" True", math.log(0.1)), ("False", math.log(0.2)),
                      ("false", math.log(0.1)), ("Maybe", math.log(0.05))])
    result, details = value(body)
    assert result == pytest.approx(math.log(0.6) - math.log(0.3))
    assert details["label_logprobs"]["True"] == pytest.approx(math.log(0.6))
    assert details["floored"] == []
    assert details["token"] == "True"


def test_missing_label_gets_the_floor_and_is_recorded():
    top = [("True", -0.01), ("Yes", -5.0), ("The", -9.0)]
    default = LabelValue(labels=(("True", ("True",)), ("False", ("False",))))
    result, details = default(chat_body(top))
    assert details["floored"] == ["False"] and details["floor"] == -9.0
    assert result == pytest.approx(-0.01 + 9.0)
    fixed = LabelValue(labels=(("True", ("True",)), ("False", ("False",))), floor=-30.0)
    result, details = fixed(chat_body(top))
    assert result == pytest.approx(29.99) and details["floor"] == -30.0


def test_single_label_log_probability():
    value = LabelValue(labels=(("True", ("True", " True")),))
    result, _ = value(chat_body([("True", math.log(0.3)), (" True", math.log(0.1)), ("No", math.log(0.6))]))
    assert result == pytest.approx(math.log(0.4))


def test_duplicate_candidate_texts_are_summed():
    top, _ = first_token_top_logprobs(chat_body([("A", math.log(0.25)), ("A", math.log(0.25))]))
    assert top == {"A": pytest.approx(math.log(0.5))}


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"choices": []},
        {"choices": [{"logprobs": None}]},
        {"choices": [{"logprobs": {"content": []}}]},
        {"choices": [{"logprobs": {"content": [{"token": "x", "top_logprobs": []}]}}]},
        {"choices": [{"logprobs": {"content": [{"token": "x", "top_logprobs": [{"token": "x"}]}]}}]},
        "not a dict",
    ],
)
def test_bodies_without_logprobs_are_malformed(body):
    with pytest.raises(MalformedResponse):
        LabelValue(labels=(("True", ("True",)),))(body)


def test_label_value_needs_one_or_two_labels():
    with pytest.raises(ValueError, match="one or two labels"):
        LabelValue(labels=())


def test_target_value_sums_the_tokens_overlapping_the_target():
    # prompt "Q: sky? A: blue sky" -> the target " blue sky" occupies [10, 19)
    body = {"choices": [{"logprobs": {
        "tokens": ["Q", ":", " sky", "?", " A", ":", " blue", " sky", "."],
        "token_logprobs": [None, -1.0, -2.0, -0.5, -0.1, -0.2, -3.0, -0.25, -0.1],
        "text_offset": [0, 1, 2, 6, 7, 9, 10, 15, 19],
    }}]}
    value, details = TargetValue()(body, (11, 19))
    assert value == pytest.approx(-3.25)
    assert details["target_tokens"] == [" blue", " sky"]


def test_target_value_without_echo_is_malformed():
    body = {"choices": [{"logprobs": {"tokens": ["."], "token_logprobs": [-0.1], "text_offset": [19]}}]}
    with pytest.raises(MalformedResponse, match="echo"):
        TargetValue()(body, (11, 19))
