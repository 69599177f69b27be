"""The transformers-classifier backend on tiny random classifiers built here: values equal the model's
own unpadded forward pass on each masked text, for an encoder (BERT) and a decoder (Llama) head."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tiny_classifier import LABELS, save_tiny_bert, save_tiny_llama_classifier  # noqa: E402

from connectors.base import Example, backend_class, build_backend, example_renderer  # noqa: E402
from pipelines.config import ConfigError, config_from_dict  # noqa: E402

TEXT = "the film is not bad at all , but the plot was not great !"


@pytest.fixture(scope="module", params=["bert", "llama"])
def model_dir(request, tmp_path_factory):
    save = save_tiny_bert if request.param == "bert" else save_tiny_llama_classifier
    return save(tmp_path_factory.mktemp(request.param))


def _direct_logits(model_dir, texts, pair=None):
    """Every label's logit per text, one text at a time (no padding), straight from transformers."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, local_files_only=True).eval()
    rows = []
    with torch.no_grad():
        for text in texts:
            inputs = tokenizer(text, pair, return_tensors="pt")
            rows.append(model(**inputs).logits[0].double().numpy())
    return np.array(rows)


def _masks(n, rows=12, seed=0):
    keep = np.random.default_rng(seed).random((rows, n)) < 0.5
    keep[0], keep[1] = True, False
    keep[1, 0] = True  # one word left, so no text is empty
    return keep


def test_values_are_a_labels_logit_or_log_probability_of_each_masked_text(model_dir):
    example = Example.from_text("e", TEXT)
    keep = _masks(example.n)
    texts = example_renderer(example).render_batch(keep)
    direct = _direct_logits(model_dir, texts)
    with build_backend({"name": "transformers-classifier", "model": str(model_dir), "label": "positive",
                        "batch_size": 5}) as backend:
        logits = backend.score(example, keep)
        assert backend.identity()["label"] == "positive" and backend.identity()["label_index"] == 2
    np.testing.assert_allclose([s.value for s in logits], direct[:, 2], atol=1e-4)
    np.testing.assert_allclose(json.loads(logits[3].raw)["logits"], direct[3], atol=1e-4)
    with build_backend({"name": "transformers-classifier", "model": str(model_dir), "label": 0,
                        "value": "logprob"}) as backend:
        logprobs = [s.value for s in backend.score(example, keep)]
    expected = direct[:, 0] - np.logaddexp.reduce(direct, axis=1)
    np.testing.assert_allclose(logprobs, expected, atol=1e-4)


def test_a_question_is_the_second_text_of_the_pair_and_is_never_masked(model_dir):
    example = Example.from_text("e", "the film was good", question="was the plot bad ?")
    keep = _masks(example.n, rows=4)
    texts = example_renderer(example).render_batch(keep)
    with build_backend({"name": "transformers-classifier", "model": str(model_dir), "label": "negative"}) as backend:
        values = [s.value for s in backend.score(example, keep)]
    np.testing.assert_allclose(values, _direct_logits(model_dir, texts, example.question)[:, 0], atol=1e-4)


def test_bad_options_fail_when_the_config_loads_naming_the_labels(model_dir, tmp_path):
    (tmp_path / "in.jsonl").write_text('{"id": "a", "text": "x y"}\n')

    def load(**backend):
        return config_from_dict({"input": {"path": str(tmp_path / "in.jsonl")},
                                 "backend": {"name": "transformers-classifier", **backend}})

    assert load(model=str(model_dir), label="neutral").backend["label"] == "neutral"
    with pytest.raises(ConfigError) as caught:
        load(model=str(model_dir), label="joy", value="prob", batch_size=0)
    message = str(caught.value)
    assert "'backend.label': label 'joy' is not a label of the model" in message
    assert all(f"{i}: {name}" in message for i, name in LABELS.items())
    assert "'backend.value' must be one of logit, logprob" in message and "'backend.batch_size'" in message
    with pytest.raises(ConfigError, match="missing required key 'backend.label'"):
        load(model=str(model_dir))
    with pytest.raises(ConfigError, match="must name a local model directory"):
        load(model="", label=1)
    load(model=str(tmp_path / "on-gpu-nodes-only"), label=1)  # looked for where the model loads
    assert backend_class("transformers-classifier").name == "transformers-classifier"
