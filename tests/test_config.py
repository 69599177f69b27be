"""Job configs: defaults, validation messages that name the key, overrides, paths, hash, secrets."""

from pathlib import Path

import pytest
import yaml

from connectors.base import BACKENDS, Backend, Score
from pipelines.config import (
    ConfigError,
    JobConfig,
    apply_override,
    changed_keys,
    config_from_dict,
    load_config,
    redact,
)

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "configs" / "demo.yaml"


def _write(tmp_path, data, name="job.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


class _Keyed(Backend):
    """A backend taking a model name and an API key option (to test overrides and redaction)."""

    name = "keyed"

    def __init__(self, *, model: str = "m", api_key: str | None = None, strategy: str = "remove",
                 mask_token: str = "[MASK]"):
        self.model = model

    def _score(self, example, keep):
        return [Score(value=0.0, raw="{}") for _ in keep]


@pytest.fixture
def keyed(monkeypatch):
    monkeypatch.setitem(BACKENDS, "keyed", f"{__name__}:_Keyed")
    return {"name": "keyed"}


@pytest.fixture
def minimal(tmp_path):
    (tmp_path / "data.jsonl").write_text('{"id": "a", "text": "x y"}\n')
    return {"input": {"path": "data.jsonl"}, "backend": {"name": "vader"}}


def test_demo_config_loads_with_its_package_input():
    config = load_config(DEMO)
    assert isinstance(config, JobConfig)
    assert config.input.path == "package://connectors/data/demo_reviews.jsonl" and config.input.format == "jsonl"
    assert config.backend == {"name": "vader"} and config.method == "spex-hybrid" and config.b == 4
    assert config.ray.num_actors == 2 and config.holdout == 200


def test_defaults_fill_everything_but_input_and_backend(tmp_path, minimal):
    config = load_config(_write(tmp_path, minimal))
    assert config.input.path == str(tmp_path / "data.jsonl")
    assert (config.input.text_field, config.input.id_field) == ("text", "id")
    assert (config.featurizer.unit, config.masking.strategy, config.method) == ("words", "remove", "spex-hybrid")
    assert (config.refit, config.trees) == ("ls", "lightgbm")
    assert config.indices == ["fbii"] and config.seed == 0 and config.progress is True


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"input": {"path": "data.jsonl", "txt_field": "t"}},
         "config: unknown key 'input.txt_field' (allowed: documents_field, format, id_field, image_field, path, question_field, "
         "target_field, text_field)"),
        ({"budgets": 10}, "config: unknown key 'budgets' (allowed: "),
        ({"ray": {"num_actor": 2}}, "config: unknown key 'ray.num_actor'"),
        ({"ray": {"num_cpus_per_decode": 1}}, "config: key 'ray.num_cpus_per_decode' is now 'ray.num_cpus_per_fit'"),
        ({"ray": {"num_actors": "two"}}, "config: 'ray.num_actors' must be an integer, got 'two'"),
        ({"ray": {"num_actors": 0}}, "config: 'ray.num_actors' must be >= 1, got 0"),
        ({"ray": 3}, "config: 'ray' must be a mapping, got int"),
        ({"holdout": True}, "config: 'holdout' must be an integer, got True"),
        ({"method": "spexx"}, "config: 'method' must be one of"),
        ({"trees": "xgboost"}, "config: 'trees' must be one of lightgbm, sklearn"),
        ({"refit": "ridge"}, "config: 'refit' must be one of ls, lasso"),
        ({"indices": ["fbii", "shap"]}, "config: 'indices[1]' must be one of"),
        ({"indices": "fbii"}, "config: 'indices' must be a list, got 'fbii'"),
        ({"budget": 1000, "b": 4}, "config: set either 'budget' or 'b', not both"),
        ({"featurizer": {"unit": "spans"}}, "config: 'featurizer.spans_field' is required"),
        ({"featurizer": {"unit": "chars"}}, "config: 'featurizer.unit' must be one of words, sentences, spans"),
        ({"masking": {"strategy": "blur"}}, "config: 'masking.strategy' must be one of remove, mask_token"),
        ({"backend": {"model": "x"}}, "config: 'backend.name' is required"),
        ({"backend": {"name": "vadr"}}, "config: 'backend.name' must be one of"),
        ({"input": {"path": "nowhere.jsonl"}}, "config: 'input.path' 'nowhere.jsonl' not found"),
        ({"input": {"path": "package://connectors/data/nope.jsonl"}}, "package 'connectors' has no file 'data/nope.jsonl'"),
        ({"input": {"path": "package://no_such_package/x.jsonl"}}, "no package 'no_such_package'"),
        ({"featurizer": {"unit": "patches", "grid": [2, 2]}}, "config: 'input.image_field' is required"),
        ({"input": {"path": "data.jsonl", "image_field": "img"}, "featurizer": {"unit": "patches"}},
         "config: 'featurizer.grid' must be [rows, cols] of positive integers, got None"),
        ({"input": {"path": "data.jsonl", "image_field": "img"}, "featurizer": {"unit": "patches", "grid": [1, 1]}},
         "config: 'featurizer.grid' [1, 1] gives 1 patch; at least 2 are needed"),
        ({"input": {"path": "data.jsonl", "image_field": "img"},
          "featurizer": {"unit": "patches", "grid": [8, 8], "max_features": 32}}, "gives 64 patches, more than"),
        ({"input": {"path": "data.jsonl", "image_field": "img"}, "featurizer": {"unit": "patches", "grid": [2, 2]}},
         "config: 'masking.strategy' must be one of blur, grey; got 'remove'"),
        ({"featurizer": {"grid": [2, 2]}}, "config: 'featurizer.grid' is only for images"),
    ],
)
def test_bad_configs_name_the_key(tmp_path, minimal, change, message):
    with pytest.raises(ConfigError) as caught:
        load_config(_write(tmp_path, {**minimal, **change}))
    assert str(caught.value).startswith(message) or message in str(caught.value)


def test_missing_required_keys_and_non_mapping_files(tmp_path):
    with pytest.raises(ConfigError, match="missing required key 'backend'"):
        config_from_dict({"input": {"path": str(DEMO)}})
    with pytest.raises(ConfigError, match="missing required key 'input.path'"):
        config_from_dict({"input": {}, "backend": {"name": "vader"}})
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(tmp_path / "list.yaml")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.yaml")


def test_set_overrides_parse_values_as_yaml(tmp_path, minimal, keyed):
    path = _write(tmp_path, {**minimal, "backend": keyed})
    config = load_config(path, ["ray.num_actors=4", "indices=[fbii, shapley]", "refit=null", "budget=5000",
                                "backend.model=m:1", "masking.mask_token=<mask>"])
    assert config.ray.num_actors == 4 and config.indices == ["fbii", "shapley"] and config.refit is None
    assert config.budget == 5000 and config.backend == {"name": "keyed", "model": "m:1"}
    assert config.masking.mask_token == "<mask>"
    with pytest.raises(ConfigError, match="unknown key 'ray.actors'"):
        load_config(path, ["ray.actors=1"])
    with pytest.raises(ConfigError, match="must look like key.path=value"):
        load_config(path, ["ray.num_actors"])
    data = {"method": "lasso"}
    with pytest.raises(ConfigError, match="'method' is not a mapping"):
        apply_override(data, "method.x=1")


def test_relative_input_paths_resolve_against_the_config_folder_then_cwd(tmp_path, monkeypatch, minimal):
    sub = tmp_path / "configs"
    sub.mkdir()
    path = _write(sub, minimal)
    monkeypatch.chdir(tmp_path)
    assert load_config(path).input.path == str(tmp_path / "data.jsonl")  # found from the cwd
    (sub / "data.jsonl").write_text('{"id": "b", "text": "x y"}\n')
    assert load_config(path).input.path == str(sub / "data.jsonl")  # the config's folder comes first


@pytest.mark.parametrize(("name", "fmt"), [("a.csv", "csv"), ("a.parquet", "parquet"), ("a.jsonl", "jsonl"),
                                           ("a.ndjson", "jsonl"), ("a.v2.pq", "parquet")])
def test_format_is_inferred_from_the_suffix(tmp_path, name, fmt):
    (tmp_path / name).write_text("")
    config = config_from_dict({"input": {"path": str(tmp_path / name)}, "backend": {"name": "vader"}})
    assert config.input.format == fmt


def test_an_unknown_suffix_needs_an_explicit_format(tmp_path):
    (tmp_path / "a.txt").write_text("")
    with pytest.raises(ConfigError, match="cannot infer 'input.format' from 'a.txt'"):
        config_from_dict({"input": {"path": str(tmp_path / "a.txt")}, "backend": {"name": "vader"}})
    config = config_from_dict({"input": {"path": str(tmp_path / "a.txt"), "format": "csv"}, "backend": {"name": "vader"}})
    assert config.input.format == "csv"


def test_secrets_are_redacted_but_harmless_token_names_are_kept():
    data = {"backend": {"name": "openai", "api_key": "sk-1", "hf_token": "hf", "max_tokens": 5,
                        "auth": {"Password": "p", "user": "u"}, "headers": [{"x-secret": "s"}]},
            "masking": {"mask_token": "[MASK]"}}
    clean = redact(data)
    assert clean["backend"]["api_key"] == clean["backend"]["hf_token"] == "<redacted>"
    assert clean["backend"]["auth"] == {"Password": "<redacted>", "user": "u"}
    assert clean["backend"]["headers"] == [{"x-secret": "<redacted>"}]
    assert clean["backend"]["max_tokens"] == 5 and clean["masking"]["mask_token"] == "[MASK]"
    assert data["backend"]["api_key"] == "sk-1"  # the input is not modified


def test_result_hash_ignores_execution_settings_and_secrets(tmp_path, minimal, keyed):
    path = _write(tmp_path, {**minimal, "backend": keyed})
    base = load_config(path).result_hash()
    assert load_config(path, ["ray.num_actors=7", "output=elsewhere", "progress=false"]).result_hash() == base
    assert load_config(path, ["backend.api_key=other"]).result_hash() == load_config(path, ["backend.api_key=k"]).result_hash()
    for change in ["method=lasso", "b=5", "seed=1", "holdout=10", "indices=[fourier]", "masking.strategy=mask_token"]:
        assert load_config(path, [change]).result_hash() != base, change
    assert "sk-secret" not in str(load_config(path, ["backend.api_key=sk-secret"]).result_config())


def test_changed_keys_lists_dotted_paths():
    assert changed_keys({"a": 1, "b": {"c": 2, "d": 3}}, {"a": 1, "b": {"c": 4}, "e": 5}) == ["b.c", "b.d", "e"]


def test_masking_goes_to_backends_that_accept_it(tmp_path, minimal):
    config = load_config(_write(tmp_path, minimal), ["masking.strategy=mask_token"])
    expected = {"name": "vader", "strategy": "mask_token", "mask_token": "[MASK]"}
    assert config.backend_spec({"strategy", "mask_token", "image_grid"}) == expected
    assert config.backend_spec({"terms"}) == {"name": "vader"}


def test_image_jobs_pass_their_grid_and_fill_to_the_backend(tmp_path, minimal):
    image = {"input": {"path": "data.jsonl", "image_field": "image"}, "featurizer": {"unit": "patches", "grid": [2, 3]},
             "masking": {"strategy": "grey", "blur_sigma": 1.5}}
    config = load_config(_write(tmp_path, {**minimal, **image}))
    accepted = {"strategy", "mask_token", "image_grid", "blur_sigma"}
    assert config.backend_spec(accepted) == {"name": "vader", "strategy": "grey", "mask_token": "[MASK]",
                                             "image_grid": [2, 3], "blur_sigma": 1.5}


PUZZLES = ROOT / "configs" / "puzzles-gpt4o-mini.yaml"


def test_a_misspelled_backend_option_fails_at_load_naming_it_without_internal_options():
    pytest.importorskip("openai")
    with pytest.raises(ConfigError) as caught:
        load_config(PUZZLES, ["backend.modle=gpt-4o-mini"])
    message = str(caught.value)
    assert "unknown key 'backend.modle' for backend 'openai'" in message and "'model'?" in message
    assert "limiter" not in message


def test_backend_option_values_are_checked_at_load():
    pytest.importorskip("openai")
    with pytest.raises(ConfigError, match="'rpm' must be > 0 or null, got -1"):
        load_config(PUZZLES, ["backend.rpm=-1"])


@pytest.mark.parametrize("old, new", [("label_logodds", "label_log_odds"), ("target_logprob", "answer_logprob")])
def test_an_old_value_kind_name_fails_at_load_naming_the_new_one(old, new):
    pytest.importorskip("openai")
    with pytest.raises(ConfigError, match=f"'value' '{old}' is now called '{new}'"):
        load_config(PUZZLES, [f"backend.value={old}"])


def test_an_open_model_backend_needs_a_model_folder_named_at_load(tmp_path, minimal):
    config = {**minimal, "backend": {"name": "transformers", "model": "  ", "value": "logits"}}
    with pytest.raises(ConfigError) as caught:
        load_config(_write(tmp_path, config))
    assert "'model' must name a local model directory" in str(caught.value)
    assert "'value' must be one of answer_logprob, label_log_odds" in str(caught.value)
    # the folder itself is looked for where the model loads (a cluster's GPU nodes may hold it)
    load_config(_write(tmp_path, {**minimal, "backend": {"name": "transformers", "model": "/models/on-gpu-nodes"}}))


def test_a_badly_typed_required_section_is_a_config_error(tmp_path, minimal):
    with pytest.raises(ConfigError, match="'backend' must be a mapping"):
        load_config(_write(tmp_path, {**minimal, "backend": "vader"}))
    with pytest.raises(ConfigError, match="'input.path' must be a string"):
        load_config(_write(tmp_path, {**minimal, "input": {"path": 5}}))


def test_a_secret_value_is_never_echoed_by_an_override_error(tmp_path, minimal):
    with pytest.raises(ConfigError) as caught:
        load_config(_write(tmp_path, minimal), ["backend.api_key=sk-abc: [unclosed"])
    assert "sk-abc" not in str(caught.value)


@pytest.mark.parametrize("key, value, message", [
    ("b", 30, "'b' must be <= 20, got 30"),
    ("t", 1000, "'t' must be <= 64, got 1000"),
    ("ray.max_attempts", 10_000, "'ray.max_attempts' must be <= 100"),
])
def test_numeric_keys_have_upper_bounds(tmp_path, minimal, key, value, message):
    with pytest.raises(ConfigError, match=message):
        load_config(_write(tmp_path, minimal), [f"{key}={value}"])


def test_every_problem_is_reported_at_once(tmp_path, minimal):
    with pytest.raises(ConfigError) as caught:
        load_config(_write(tmp_path, minimal), ["b=30", "input.txt_field=x", "method=nope", "backend.colour=red"])
    message = str(caught.value)
    assert message.startswith("config: 4 problems:")
    for part in ("'b' must be <= 20", "unknown key 'input.txt_field'", "'method' must be one of",
                 "unknown key 'backend.colour'"):
        assert part in message
