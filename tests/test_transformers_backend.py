import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tiny_lm import save_tiny_llama  # noqa: E402

from connectors.backends.transformers_backend import TransformersBackend  # noqa: E402
from connectors.base import Example, build_backend  # noqa: E402
from connectors.features.documents import documents_example  # noqa: E402

TEMPLATE = "Context: {context}\n\nQuestion: {question}\nAnswer:"
TEXT = "The cat sat on the mat. Paris is the capital of France. The dog barked at the cat."
QUESTION = "Where did the cat sit?"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), max_positions=128)


@pytest.fixture(scope="module")
def model(model_dir):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True, dtype=torch.float32).eval()


def _backend(model_dir, **options):
    return build_backend({"name": "transformers", "model": str(model_dir), "template": TEMPLATE, **options})


def _direct_logprob(model, ids, continuation):
    """log p(last ``continuation`` ids | the ids before), one unpadded prompt, all logits."""
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].double()
    logprobs = torch.log_softmax(logits, dim=-1)
    return float(sum(logprobs[p - 1, ids[p]] for p in range(len(ids) - continuation, len(ids))))


def _masks(n, rows, seed=0):
    keep = np.random.default_rng(seed).random((rows, n)) < 0.5
    keep[0] = True
    keep[1] = False
    return keep


def _masked_words(example, row):
    """Kept words, each after its separator (a space; none before the first word of the text)."""
    return "".join((" " if i else "") + example.features[i] for i in np.flatnonzero(row))


def test_values_equal_a_direct_computation_of_the_answer_logprob(model_dir, model):
    backend = _backend(model_dir)
    tokenizer = backend.tokenizer
    example = Example.from_text("e", TEXT, "words", question=QUESTION, target="on the mat")
    keep = _masks(example.n, 12)
    scores = backend.score(example, keep)
    target = tokenizer.encode(" on the mat", add_special_tokens=False)
    for row, score in zip(keep, scores):
        context = "Context:" + (" " if row[0] else "") + _masked_words(example, row)
        text = context + f"\n\nQuestion: {QUESTION}\nAnswer: on the mat"
        ids = tokenizer.encode(text, add_special_tokens=True)
        assert ids[-len(target) :] == target
        assert score.error is None
        assert score.value == pytest.approx(_direct_logprob(model, ids, len(target)), abs=1e-4)
        raw = json.loads(score.raw)
        assert raw["prompt_tokens"] == len(ids) - len(target)


def test_batching_and_padding_give_the_values_of_batch_size_one(model_dir):
    example = documents_example(
        "d",
        [{"title": "Cats", "text": "The cat sat on the mat. The dog barked."}, {"title": "France", "text": TEXT}],
        "sentences",
        question=QUESTION,
        target="on the mat",
    )
    keep = _masks(example.n, 16, seed=1)
    single = _backend(model_dir, batch_size=1).score(example, keep)
    for options in ({"batch_size": 16}, {"batch_size": 5, "max_batch_tokens": 200}):
        batched = _backend(model_dir, **options).score(example, keep)
        np.testing.assert_allclose([s.value for s in batched], [s.value for s in single], atol=1e-4, rtol=0)
    assert len({json.loads(s.raw)["prompt_tokens"] for s in single}) > 3  # rows of many lengths were padded


def test_the_models_own_answer_is_generated_once_and_scored(model_dir, model):
    backend = _backend(model_dir, max_new_tokens=4, stop=[])
    example = Example.from_text("e", TEXT, "sentences", question=QUESTION)
    prompt = backend.prompt(example).ids(np.ones((1, example.n), dtype=bool))[0]
    with torch.no_grad():
        greedy = model.generate(torch.from_numpy(prompt)[None, :], do_sample=False, max_new_tokens=4, pad_token_id=2)
    answer = backend.answer_text(greedy[0, len(prompt) :].tolist())
    assert answer and backend.target(example) == answer
    keep = np.ones((1, example.n), dtype=bool)
    (score,) = backend.score(example, keep)
    target = backend.tokenizer.encode(" " + answer, add_special_tokens=False)
    assert score.value == pytest.approx(_direct_logprob(model, prompt.tolist() + target, len(target)), abs=1e-4)
    calls = []
    backend._generate = lambda *args: calls.append(args)
    backend.score(example, _masks(example.n, 4))
    assert calls == []  # cached per example


def test_answer_text_cuts_at_eos_and_stop_strings(model_dir):
    backend = _backend(model_dir, stop=["\n", "."])
    tokenizer = backend.tokenizer
    ids = tokenizer.encode(" Paris is. The cat", add_special_tokens=False)
    assert backend.answer_text(ids) == "Paris is"
    eos = tokenizer.eos_token_id
    assert backend.answer_text([*tokenizer.encode(" on the mat", add_special_tokens=False), eos, 5, 6]) == "on the mat"


def test_label_log_odds_combine_variants_with_logsumexp(model_dir, model):
    labels = [[" Yes", " yes"], [" No", " the cat"]]
    backend = _backend(model_dir, value="label_log_odds", labels=labels, template="{context}\nIs it about a cat?")
    tokenizer = backend.tokenizer
    example = Example.from_text("e", TEXT, "words")
    keep = _masks(example.n, 4, seed=2)
    for row, score in zip(keep, backend.score(example, keep)):
        prefix = _masked_words(example, row) + "\nIs it about a cat?"
        totals = []
        for label in labels:
            logprobs = []
            for variant in label:
                ids = tokenizer.encode(prefix + variant, add_special_tokens=True)
                logprobs.append(_direct_logprob(model, ids, len(tokenizer.encode(variant, add_special_tokens=False))))
            totals.append(np.logaddexp.reduce(logprobs))
        assert score.value == pytest.approx(totals[0] - totals[1], abs=1e-4)
        assert json.loads(score.raw)["label_logprobs"] == pytest.approx(totals, abs=1e-4)


def test_mask_token_strategy_and_chat_template(model_dir, model):
    backend = _backend(model_dir, strategy="mask_token", mask_token="[MASK]", chat_template=True)
    example = Example.from_text("e", TEXT, "sentences", question=QUESTION, target="on the mat")
    keep = np.array([[True, False, True]])
    (score,) = backend.score(example, keep)
    masked = TEXT.replace("Paris is the capital of France.", "[MASK]")
    messages = [{"role": "user", "content": TEMPLATE.format(context=masked, question=QUESTION)}]
    rendered = backend.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids = backend.tokenizer.encode(rendered + "on the mat", add_special_tokens=False)
    target = len(backend.tokenizer.encode("\non the mat", add_special_tokens=False)) - 1
    assert score.value == pytest.approx(_direct_logprob(model, ids, target), abs=1e-4)


def test_rows_that_cannot_be_scored_get_errors_not_exceptions(model_dir):
    backend = _backend(model_dir)
    no_question = Example.from_text("e", TEXT, "words", target="x")
    scores = backend.score(no_question, np.ones((2, no_question.n), dtype=bool))
    assert all(s.value is None and "no question" in s.error for s in scores)
    long_text = " ".join(["the cat sat on the mat"] * 40)
    long = Example.from_text("l", long_text, "sentences", question=QUESTION, target="mat")
    keep = np.array([[True], [False]])
    too_long, short = backend.score(long, keep)
    assert too_long.value is None and "longer than the model's 128" in too_long.error
    assert short.error is None and np.isfinite(short.value)


def test_options_are_checked_and_identity_is_json(model_dir):
    with pytest.raises(ValueError, match="local model directory"):
        TransformersBackend(model=str(model_dir / "missing"))
    with pytest.raises(ValueError, match="value"):
        _backend(model_dir, value="accuracy")
    with pytest.raises(ValueError, match="labels"):
        _backend(model_dir, value="label_log_odds", labels=["Yes"])
    with pytest.raises(ValueError, match="masking strategy"):
        _backend(model_dir, strategy="blur")
    with pytest.raises(ValueError, match="dtype"):
        _backend(model_dir, dtype="int4")
    with pytest.raises(ValueError, match="unknown option"):
        _backend(model_dir, temperature=0.0)
    backend = _backend(model_dir, dtype="float32", device="cpu")
    identity = json.loads(json.dumps(backend.identity()))
    assert identity["backend"] == "transformers" and identity["model_type"] == "llama"
    assert identity["dtype"] == "float32" and identity["template"] == TEMPLATE
    backend.close()
