"""The pipeline's pieces without Ray: query layout, batch scoring with retries, part files, input
reading, the reducer, and what a job takes from its backend class (hash, secrets, GPUs, estimates)."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from connectors.backends.fake import FakeBackend
from connectors.base import BACKENDS, Backend, Example, Score
from pipelines.backends import default_gpus
from pipelines.config import ConfigError, config_from_dict, redact
from pipelines.inputs import BadInput, count_records, load_examples
from pipelines.method import MethodSpec
from pipelines.parts import PartWriter, compact_parts, group_by_example, part_files, read_parts
from pipelines.plan import plan_job
from pipelines.reduce import error_rows, fit_example, rows_to_batch
from pipelines.scoring import BatchScorer
from pipelines.schema import EXPLANATION_SCHEMA, QUERY_LOG_SCHEMA

EXAMPLE = Example.from_text("ex", "one two three four five six seven eight")
TERMS = [[[0], 1.0], [[1, 2], -0.5], [[5], 0.25]]


def _spec(**changes):
    settings = dict(method="spex-hard", budget=None, b=3, t=2, seed=0, max_order=2, refit="ls", holdout=40,
                    indices=("fourier", "fbii", "shapley"))
    settings.update(changes)
    return MethodSpec(**settings)


def _config(tmp_path, records, input_fields=None, **changes):
    path = tmp_path / "input.jsonl"
    path.write_bytes(records)
    data = {"input": {"path": str(path), **(input_fields or {})}, "backend": {"name": "fake"},
            "output": str(tmp_path / "out"), **changes}
    return config_from_dict(data)


def test_layout_concatenates_design_holdout_full_and_empty_masks():
    layout = _spec().layout(EXAMPLE.n)
    q, h = layout.num_design, layout.holdout
    assert layout.num_queries == q + h + 2
    masks = layout.masks(0, layout.num_queries)
    assert masks.shape == (q + h + 2, EXAMPLE.n) and masks.dtype == bool
    np.testing.assert_array_equal(masks[:q], _spec().method_for(EXAMPLE.n).design.masks())
    assert masks[layout.full_id].all() and not masks[layout.empty_id].any()
    np.testing.assert_array_equal(layout.holdout_masks(), masks[q : q + h])
    # any split of the id range gives the same rows
    parts = [layout.masks(a, b) for a, b in [(0, 5), (5, q + 3), (q + 3, layout.num_queries)]]
    np.testing.assert_array_equal(np.concatenate(parts), masks)


def test_layout_pickles_only_its_parameters():
    import pickle

    layout = _spec().layout(EXAMPLE.n)
    layout.masks(0, 3)
    clone = pickle.loads(pickle.dumps(layout))
    assert clone == layout and "_design" not in clone.__dict__
    np.testing.assert_array_equal(clone.masks(0, 10), layout.masks(0, 10))


class _Flaky(Backend):
    """Raises for batches with more than one row; the all-masked row fails once more, then works."""

    name = "flaky"

    def __init__(self):
        self.calls = 0
        self.failures = 0

    def _score(self, example, keep):
        self.calls += 1
        if len(keep) > 1:
            raise RuntimeError("batch too large")
        if not keep[0].any() and self.failures < 1:
            self.failures += 1
            return [Score(value=None, raw="{}", error="transient")]
        return [Score(value=float(keep[0].sum()), raw="{}")]


def test_batch_scorer_retries_rows_one_by_one_and_records_attempts():
    layout = _spec().layout(EXAMPLE.n)
    rows = BatchScorer(_Flaky(), max_attempts=3).score(EXAMPLE, layout, layout.empty_id - 3, layout.num_queries)
    assert rows.schema == QUERY_LOG_SCHEMA
    table = rows.to_pydict()
    assert table["query_id"] == list(range(layout.empty_id - 3, layout.num_queries))
    assert table["attempts"] == [2, 2, 2, 3]  # the failed batch call, then single calls
    assert table["error"] == [None] * 4
    assert table["value"][-1] == 0.0 and table["value"][-2] == EXAMPLE.n


def test_batch_scorer_records_the_last_error_after_max_attempts():
    layout = _spec().layout(EXAMPLE.n)
    backend = FakeBackend(terms=TERMS, fail_queries=[list(range(EXAMPLE.n))], fail_mode="error")
    rows = BatchScorer(backend, max_attempts=2).score(EXAMPLE, layout, layout.full_id - 1, layout.num_queries)
    table = rows.to_pydict()
    assert table["error"] == [None, "planted failure", None]
    assert table["value"][1] is None and table["attempts"] == [1, 2, 1]


def test_part_writer_writes_whole_parts_atomically(tmp_path):
    (tmp_path / "log").mkdir()
    (tmp_path / "log" / ".tmp-leftover.parquet").write_bytes(b"half a file")  # from a killed run
    writer = PartWriter(tmp_path / "log", QUERY_LOG_SCHEMA, "run", {"k": "v"})
    assert writer.flush() is None
    layout = _spec().layout(EXAMPLE.n)
    scorer = BatchScorer(FakeBackend(terms=TERMS))
    writer.append(scorer.score(EXAMPLE, layout, 0, 10))
    writer.append(scorer.score(EXAMPLE, layout, 10, 25))
    path = writer.flush()
    assert path is not None and part_files(tmp_path / "log") == [path]
    assert not list((tmp_path / "log").glob(".tmp-*"))
    assert pq.read_schema(path).metadata == {b"k": b"v"}
    table = read_parts(tmp_path / "log", QUERY_LOG_SCHEMA)
    assert table.column("query_id").to_pylist() == list(range(25))
    assert read_parts(tmp_path / "log", QUERY_LOG_SCHEMA, exclude_examples=["ex"]).num_rows == 0
    assert list(group_by_example(table)) == ["ex"]


def test_compaction_merges_many_parts_into_one_with_the_same_rows(tmp_path):
    layout = _spec().layout(EXAMPLE.n)
    scorer = BatchScorer(FakeBackend(terms=TERMS))
    for run in range(3):
        writer = PartWriter(tmp_path / "log", QUERY_LOG_SCHEMA, f"run{run}", {"run": str(run)})
        for start in range(run * 30, run * 30 + 30, 10):
            writer.append(scorer.score(EXAMPLE, layout, start, start + 10))
            writer.flush()
    before = read_parts(tmp_path / "log", QUERY_LOG_SCHEMA).to_pylist()
    assert compact_parts(tmp_path / "log", QUERY_LOG_SCHEMA, "run3", min_parts=10) == 0
    assert len(part_files(tmp_path / "log")) == 9

    assert compact_parts(tmp_path / "log", QUERY_LOG_SCHEMA, "run3", min_parts=9) == 9
    [merged] = part_files(tmp_path / "log")
    assert not list((tmp_path / "log").glob(".tmp-*"))
    assert pq.read_schema(merged).metadata == {b"run": b"2"}
    after = read_parts(tmp_path / "log", QUERY_LOG_SCHEMA).to_pylist()
    assert sorted(after, key=lambda r: r["query_id"]) == sorted(before, key=lambda r: r["query_id"])
    assert [r["query_id"] for r in after] == list(range(90))


def test_part_writer_rejects_another_schema(tmp_path):
    writer = PartWriter(tmp_path, QUERY_LOG_SCHEMA, "run")
    with pytest.raises(ValueError, match="schema differs"):
        writer.append(pa.RecordBatch.from_pydict({"example_id": ["a"]}))


def test_fit_example_recovers_a_planted_function_with_perfect_faithfulness():
    spec = _spec()
    layout = spec.layout(EXAMPLE.n)
    values = np.array([s.value for s in FakeBackend(terms=TERMS, constant=0.3).score(EXAMPLE, layout.masks(0, layout.num_queries))])
    rows = fit_example(EXAMPLE, spec, layout, values)
    assert [row["index"] for row in rows] == ["fourier", "fbii", "shapley"]
    assert [row["max_order"] for row in rows] == [2, 2, 1]
    fourier = {tuple(t["features"]): t["value"] for t in rows[0]["interactions"]}
    assert fourier == pytest.approx({(0,): 1.0, (1, 2): -0.5, (5,): 0.25, (): 0.3})
    magnitudes = [abs(t["value"]) for t in rows[0]["interactions"]]
    assert magnitudes == sorted(magnitudes, reverse=True)
    assert rows[0]["faithfulness_r2"] == pytest.approx(1.0)
    assert rows[0]["full_value"] == pytest.approx(0.3 - 1.0 - 0.5 - 0.25)
    assert rows[0]["empty_value"] == pytest.approx(0.3 + 1.0 - 0.5 + 0.25)
    batch = rows_to_batch(rows)
    assert batch.schema == EXPLANATION_SCHEMA and batch.num_rows == 3


def test_error_rows_follow_the_schema_for_bad_input():
    rows = error_rows(BadInput("x", "missing field 'text'"), _spec(), "missing field 'text'")
    batch = rows_to_batch(rows)
    assert batch.num_rows == 3
    assert set(batch.column("status").to_pylist()) == {"error"}
    assert batch.column("n_features").to_pylist() == [None] * 3


def test_inputs_turn_every_bad_record_into_a_bad_input_with_its_reason(tmp_path):
    lines = [
        b'{"id": "ok", "text": "a perfectly fine review"}',
        b'{"id": "empty", "text": "   "}',
        b'{"id": "no-text", "body": "where is the text"}',
        b'{"id": "bytes", "text": "caf\xe9 au lait"}',
        b'{"id": "one", "text": "single"}',
        b'{"id": "long", "text": "' + b" ".join([b"w"] * 12) + b'"}',
        b"not json at all",
        b'{"text": "no id here at all"}',
        b'{"id": "ok", "text": "the same id again"}',
        b"",
        b'{"id": 7, "text": "numeric ids become strings"}',
    ]
    config = _config(tmp_path, b"\n".join(lines), featurizer={"max_features": 10})
    items = list(load_examples(config))
    assert count_records(config.input) == 10
    by_id = {item.example_id: item for item in items}
    assert isinstance(by_id["ok"], Example) and isinstance(by_id["7"], Example)
    errors = {item.example_id: item.error for item in items if isinstance(item, BadInput)}
    assert "empty" in errors["empty"]
    assert errors["no-text"] == "missing field 'text'"
    assert "undecodable bytes" in errors["bytes"] and "line 4" in errors["bytes"]
    assert "at least 2" in errors["one"]
    assert "more than max_features=10" in errors["long"]
    assert "not valid JSON" in errors["row-6"]
    assert "missing field 'id'" in errors["row-7"]
    assert "duplicate example id 'ok'" in errors["ok (row 8)"]
    assert list(load_examples(config, limit=2))[1].example_id == "empty"


def test_inputs_make_image_examples_from_paths_relative_to_the_input(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "cat.png").write_bytes(b"not read here")
    lines = [b'{"id": "cat", "image": "img/cat.png", "question": "what animal?"}',
             b'{"id": "dog", "image": "img/dog.png", "question": "what animal?"}',
             b'{"id": "none", "question": "what animal?"}']
    config = _config(tmp_path, b"\n".join(lines), {"image_field": "image", "question_field": "question"},
                     featurizer={"unit": "patches", "grid": [2, 3]}, masking={"strategy": "blur"})
    cat, dog, none = load_examples(config)
    assert cat.text == str(tmp_path / "img" / "cat.png") and cat.spans is None
    assert cat.features == ("r0c0", "r0c1", "r0c2", "r1c0", "r1c1", "r1c2") and cat.question == "what animal?"
    assert isinstance(dog, BadInput) and "not found" in dog.error
    assert isinstance(none, BadInput) and none.error == "missing field 'image'"


def test_inputs_read_csv_and_parquet_with_spans(tmp_path):
    csv_path = tmp_path / "input.csv"
    csv_path.write_bytes(b'id,text\na,"one, two, three"\nb,"bad \xff byte"\n')
    config = config_from_dict({"input": {"path": str(csv_path)}, "backend": {"name": "fake"}})
    items = list(load_examples(config))
    assert items[0].features == ("one,", "two,", "three")
    assert isinstance(items[1], BadInput) and "undecodable" in items[1].error

    table = pa.table({"id": ["s"], "text": ["Q: is it good? A: yes"], "spans": [[[3, 14], [18, 21]]], "y": ["yes"]})
    pq.write_table(table, tmp_path / "input.parquet")
    config = config_from_dict({
        "input": {"path": str(tmp_path / "input.parquet"), "target_field": "y"},
        "featurizer": {"unit": "spans", "spans_field": "spans"},
        "backend": {"name": "fake"},
    })
    (example,) = load_examples(config)
    assert example.features == ("is it good?", "yes") and example.target == "yes"
    assert json.loads(json.dumps(example.spans)) == [[3, 14], [18, 21]]


class _Capped(Backend):
    """Sends the first ``budget`` rows it is asked for; later rows come back not sent."""

    name = "capped"

    def __init__(self, budget):
        self.budget = budget
        self.rows = 0

    def _score(self, example, keep):
        scores = []
        for row in keep:
            self.rows += 1
            if self.rows > self.budget:
                scores.append(Score(value=None, raw="{}", error="not sent: cap", sent=False))
            else:
                scores.append(Score(value=float(row.sum()), raw="{}"))
        return scores


def test_batch_scorer_neither_retries_nor_returns_rows_that_were_not_sent():
    layout = _spec().layout(EXAMPLE.n)
    backend = _Capped(budget=3)
    rows = BatchScorer(backend, max_attempts=3).score(EXAMPLE, layout, 10, 18)
    assert rows.to_pydict()["query_id"] == [10, 11, 12] and rows.column("error").null_count == 3
    assert backend.rows == 8  # one batch call, no row retried
    assert Score(None, json.dumps({"not_sent": True}), "boom").sent and Score(1.0, "{}").sent  # unless declared


def test_inputs_make_document_examples_from_jsonl_and_csv(tmp_path):
    documents = [{"title": "Ada", "text": "Ada made clocks. She lived by the sea."},
                 {"title": "Sea", "sentences": ["The sea is cold.", "It is grey."]}]
    lines = [json.dumps({"id": "qa", "docs": documents, "q": "Where?"}).encode(),
             b'{"id": "no-title", "docs": [{"text": "untitled"}], "q": "?"}',
             b'{"id": "not-a-list", "docs": 3, "q": "?"}']
    fields = {"documents_field": "docs", "question_field": "q"}
    config = _config(tmp_path, b"\n".join(lines), fields, featurizer={"unit": "documents"})
    example, untitled, bad = load_examples(config)
    assert example.n == 2
    assert example.text == "Ada\nAda made clocks. She lived by the sea.\n\nSea\nThe sea is cold. It is grey."
    assert example.features[1] == "Sea\nThe sea is cold. It is grey." and example.question == "Where?"
    assert isinstance(untitled, BadInput) and "title" in untitled.error
    assert isinstance(bad, BadInput) and "must be a list" in bad.error
    sentences = _config(tmp_path, b"\n".join(lines), fields, featurizer={"unit": "sentences"})
    assert next(load_examples(sentences)).features == ("Ada made clocks.", "She lived by the sea.",
                                                       "The sea is cold.", "It is grey.")

    csv_path = tmp_path / "input.csv"
    csv_path.write_text("id,docs\nc,\"" + json.dumps(documents).replace('"', '""') + "\"\n")
    config = config_from_dict({"input": {"path": str(csv_path), "documents_field": "docs"},
                               "featurizer": {"unit": "documents"}, "backend": {"name": "fake"}})
    assert next(load_examples(config)).features == example.features


@pytest.mark.parametrize(("input_fields", "featurizer", "message"), [
    ({}, {"unit": "documents"}, "'input.documents_field' is required when 'featurizer.unit' is documents"),
    ({"documents_field": "d"}, {"unit": "words"}, "'featurizer.unit' must be one of documents, sentences"),
    ({"documents_field": "d"}, {"unit": "sentences", "spans_field": "s"}, "cannot be used with"),
])
def test_document_configs_are_checked(tmp_path, input_fields, featurizer, message):
    with pytest.raises(ConfigError, match=message):
        _config(tmp_path, b"", input_fields, featurizer=featurizer)


def test_the_result_hash_leaves_out_the_backend_execution_options(tmp_path):
    pytest.importorskip("openai")
    pytest.importorskip("bpe_openai")
    from connectors.backends.openai_backend import OpenAIBackend

    def config(**backend):
        return _config(tmp_path, b"", backend={"name": "openai", "model": "gpt-4o-mini", **backend})

    base = config(max_cost_usd=1.0, rpm=500)
    assert {"max_cost_usd", "rpm", "timeout_s", "batch_state_dir"} <= OpenAIBackend.execution_options
    assert config(max_cost_usd=5.0, rpm=5000, timeout_s=3.0).result_hash() == base.result_hash()
    assert config(model="gpt-4o").result_hash() != base.result_hash()
    assert config(labels=["Yes", "No"]).result_hash() != base.result_hash()
    assert base.result_config()["backend"] == {"name": "openai", "model": "gpt-4o-mini"}


def test_engine_token_budgets_are_not_redacted_as_secrets():
    clean = redact({"max_num_batched_tokens": 16384, "max_batch_tokens": 8192, "api_token": "t"})
    assert clean == {"max_num_batched_tokens": 16384, "max_batch_tokens": 8192, "api_token": "<redacted>"}


def test_a_vllm_replica_gets_its_tensor_parallel_gpus_by_default():
    assert default_gpus("vllm", {"name": "vllm", "tensor_parallel_size": 4}) == 4
    assert default_gpus("vllm", {"name": "vllm"}) == 1
    assert default_gpus("vader", {"name": "vader"}) == 0


def test_plan_times_vader_in_process(tmp_path):
    config = _config(tmp_path, b'{"id": "a", "text": "a truly wonderful and moving film"}', backend={"name": "vader"},
                     b=3)
    estimate = plan_job(config).estimate
    assert estimate["seconds"] > 0 and "timed in this process" in estimate["basis"]


class _Priced(Backend):
    """Records the options its estimate is given."""

    name = "priced"
    seen: dict = {}

    def __init__(self, *, strategy="remove", mask_token="[MASK]", price=1.0):
        self.strategy = strategy

    @classmethod
    def estimate(cls, examples, num_queries, **options):
        cls.seen = options
        return {"dollars": options["price"] * sum(num_queries)}

    def _score(self, example, keep):
        return [Score(value=0.0, raw="{}") for _ in keep]


def test_plan_gives_the_estimate_the_masking_options(tmp_path, monkeypatch):
    monkeypatch.setitem(BACKENDS, "priced", f"{__name__}:_Priced")
    config = _config(tmp_path, b'{"id": "a", "text": "one two three four"}', backend={"name": "priced", "price": 2.0},
                     masking={"strategy": "mask_token", "mask_token": "___"}, b=3)
    plan = plan_job(config)
    assert _Priced.seen == {"price": 2.0, "strategy": "mask_token", "mask_token": "___"}
    assert plan.estimate == {"dollars": 2.0 * plan.total_queries}


def test_a_layout_without_held_out_masks_serves_ranges_across_the_design_end():
    spec = MethodSpec("spex-hard", None, 2, 2, 0, 2, "ls", 0, ("fourier",))
    layout = spec.layout(EXAMPLE.n)
    masks = layout.masks(0, layout.num_queries)
    assert masks.shape == (layout.num_design + 2, EXAMPLE.n)
    assert masks[-2].all() and not masks[-1].any()
