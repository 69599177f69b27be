"""A backend of one's own named by its import path: found, checked and built like a registered one,
and every mistake reported when the config loads, naming ``backend.name`` or the option."""

import numpy as np
import pytest

from connectors.base import Example, backend_class, build_backend
from pipelines.config import ConfigError, config_from_dict

PATH = "custom_backend:PhraseBackend"


def _load(tmp_path, backend):
    (tmp_path / "in.jsonl").write_text('{"id": "a", "text": "not bad at all"}\n')
    return config_from_dict({"input": {"path": str(tmp_path / "in.jsonl")}, "backend": backend})


def test_a_class_named_by_its_import_path_is_built_and_scores():
    from custom_backend import PhraseBackend

    assert backend_class(PATH) is PhraseBackend
    assert PhraseBackend.name == PATH  # no name set: its import path
    backend = build_backend({"name": PATH, "weights": {"bad": -1.0}, "phrase": ["not", "bad"], "bonus": 2.0})
    keep = np.array([[True, True, True, True], [False, True, True, True]])
    assert [s.value for s in backend.score(Example.from_text("a", "not bad at all"), keep)] == [1.0, -1.0]
    assert backend.identity()["backend"] == PATH


def test_its_options_are_checked_when_the_config_loads(tmp_path):
    config = _load(tmp_path, {"name": PATH, "weights": {"bad": -1}})
    assert config.backend_spec({"strategy", "mask_token"})["strategy"] == "remove"  # masking settings reach it
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, {"name": PATH, "weigths": {"bad": -1}})
    assert f"unknown key 'backend.weigths' for backend '{PATH}'" in str(caught.value)
    assert "did you mean 'weights'" in str(caught.value)
    with pytest.raises(ConfigError, match="'backend.weights' must map words to numbers"):
        _load(tmp_path, {"name": PATH, "weights": ["bad"]})


@pytest.mark.parametrize(
    "name, message",
    [
        ("no_such_module:Backend", "cannot import module 'no_such_module'"),
        ("custom_backend:Missing", "custom_backend.Missing must be a subclass of connectors.Backend, found nothing"),
        ("json:JSONDecoder", "json.JSONDecoder must be a subclass of connectors.Backend"),
        ("vadr", "'backend.name' must be one of fake, openai, transformers, transformers-classifier, vader, vllm "
                 "or an import path 'package.module:Class'"),
        ("custom backend:Phrase", "must be one of"),
        (3, "must be one of"),
    ],
)
def test_a_bad_name_is_reported_naming_backend_name(tmp_path, name, message):
    with pytest.raises(ConfigError, match="'backend.name'") as caught:
        _load(tmp_path, {"name": name})
    assert message in str(caught.value)
