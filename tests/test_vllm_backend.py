"""The vLLM backend: engine glue on CPU through a stand-in ``vllm`` module; the real engine on a GPU.

The stand-in answers ``LLM.generate`` with the tiny transformers model and returns outputs shaped
like vLLM's ``RequestOutput`` (``prompt_token_ids``, ``prompt_logprobs``: None then one
``{token id: Logprob}`` per position, ``outputs[0].token_ids``), so everything but the engine
itself is checked without a GPU. GPU tests (marked ``gpu``) need CUDA and vllm installed.
"""

import importlib.util
import json
import os
import sys
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tiny_lm import save_tiny_llama  # noqa: E402

from connectors.base import Example, build_backend  # noqa: E402
from connectors.features.image import PatchMasker, image_example  # noqa: E402

HAS_VLLM = importlib.util.find_spec("vllm") is not None
TEMPLATE = "Context: {context}\n\nQuestion: {question}\nAnswer:"
TEXT = "The cat sat on the mat. Paris is the capital of France. The dog barked at the cat."
QUESTION = "Where did the cat sit?"

gpu = pytest.mark.skipif(not (HAS_VLLM and torch.cuda.is_available()), reason="needs a CUDA GPU and vllm")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), max_positions=256)


class _SamplingParams:
    def __init__(self, *, max_tokens=16, prompt_logprobs=None, temperature=1.0, detokenize=True):
        self.max_tokens = max_tokens
        self.prompt_logprobs = prompt_logprobs
        self.temperature = temperature
        self.detokenize = detokenize


class _LLM:
    """Answers like vllm.LLM, computed with the transformers model (batch size 1, no padding)."""

    instances: list = []

    def __init__(self, **options):
        from transformers import AutoModelForCausalLM

        self.options = options
        self.prompts = []
        self.model = AutoModelForCausalLM.from_pretrained(options["model"], local_files_only=True).eval()
        config = types.SimpleNamespace(max_model_len=options.get("max_model_len") or 256)
        self.llm_engine = types.SimpleNamespace(model_config=config)
        _LLM.instances.append(self)

    def generate(self, prompts, params, use_tqdm=True):
        assert not use_tqdm and not params.detokenize
        outputs = []
        for prompt in prompts:
            self.prompts.append(prompt)
            ids = torch.tensor([prompt["prompt_token_ids"]])
            logprobs, generated = None, []
            with torch.no_grad():
                if params.prompt_logprobs is not None:
                    assert params.prompt_logprobs == 0 and params.max_tokens == 1
                    table = self.model(ids).logits[0].log_softmax(-1)
                    logprobs = [None] + [
                        {int(t): types.SimpleNamespace(logprob=float(table[p - 1, t]), rank=1)}
                        for p, t in enumerate(ids[0].tolist())
                        if p
                    ]
                else:
                    assert params.temperature == 0.0
                    out = self.model.generate(ids, do_sample=False, max_new_tokens=params.max_tokens, pad_token_id=2)
                    generated = out[0, ids.shape[1] :].tolist()
            outputs.append(
                types.SimpleNamespace(
                    prompt_token_ids=prompt["prompt_token_ids"],
                    prompt_logprobs=logprobs,
                    outputs=[types.SimpleNamespace(token_ids=generated)],
                )
            )
        return outputs


@pytest.fixture
def fake_vllm(monkeypatch):
    module = types.ModuleType("vllm")
    module.LLM = _LLM
    module.SamplingParams = _SamplingParams
    monkeypatch.setitem(sys.modules, "vllm", module)
    _LLM.instances.clear()
    return module


def _spec(model_dir, **options):
    return {"name": "vllm", "model": str(model_dir), "template": TEMPLATE, **options}


@pytest.mark.skipif(HAS_VLLM, reason="vllm is installed")
def test_without_vllm_construction_fails_at_once_naming_the_extra(model_dir):
    from connectors.backends.vllm_backend import VLLMBackend

    with pytest.raises(ImportError, match=r"pip install 'spex-ray\[vllm\]'"):
        VLLMBackend(model=str(model_dir))
    with pytest.raises(ImportError, match=r"pip install 'spex-ray\[vllm\]'"):
        build_backend(_spec(model_dir))


def test_values_match_the_transformers_backend(fake_vllm, model_dir):
    example = Example.from_text("e", TEXT, "words", question=QUESTION, target="on the mat")
    keep = np.random.default_rng(0).random((10, example.n)) < 0.5
    engine = build_backend(_spec(model_dir, max_model_len=256, gpu_memory_utilization=0.5, enable_prefix_caching=False))
    reference = build_backend({**_spec(model_dir), "name": "transformers", "batch_size": 4})
    ours = [s.value for s in engine.score(example, keep)]
    np.testing.assert_allclose(ours, [s.value for s in reference.score(example, keep)], atol=1e-4, rtol=0)
    (llm,) = _LLM.instances
    assert llm.options["gpu_memory_utilization"] == 0.5 and llm.options["enable_prefix_caching"] is False
    assert "distributed_executor_backend" not in llm.options
    assert all(set(p) == {"prompt_token_ids"} for p in llm.prompts)


def test_labels_and_the_generated_answer_go_through_the_engine(fake_vllm, model_dir):
    example = Example.from_text("e", TEXT, "sentences", question=QUESTION)
    keep = np.array([[True, True, True], [False, True, False]])
    options = {"max_new_tokens": 4, "stop": []}
    engine = build_backend(_spec(model_dir, **options))
    reference = build_backend({**_spec(model_dir, **options), "name": "transformers"})
    assert engine.target(example) == reference.target(example)
    np.testing.assert_allclose(
        [s.value for s in engine.score(example, keep)], [s.value for s in reference.score(example, keep)], atol=1e-4
    )
    labels = {"value": "label_log_odds", "labels": [[" on", " the"], " Paris"]}
    engine = build_backend(_spec(model_dir, **labels))
    reference = build_backend({**_spec(model_dir, **labels), "name": "transformers"})
    ours, theirs = engine.score(example, keep), reference.score(example, keep)
    np.testing.assert_allclose([s.value for s in ours], [s.value for s in theirs], atol=1e-4)
    assert len(_LLM.instances[-1].prompts) == 2 * 3  # one prefill per row and label variant
    assert json.loads(ours[0].raw)["variant_logprobs"][1][0] == pytest.approx(
        json.loads(theirs[0].raw)["variant_logprobs"][1][0], abs=1e-4
    )


def test_image_examples_send_masked_images_in_the_multimodal_prompt(fake_vllm, model_dir, tmp_path):
    image_module = pytest.importorskip("PIL.Image")
    pixels = np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8)
    image_module.fromarray(pixels).save(tmp_path / "noise.png")
    example = image_example("img", tmp_path / "noise.png", 2, 3, question="What is it?", target="noise")
    engine = build_backend(
        _spec(
            model_dir,
            template="<image> {question}\nAnswer:",
            image_grid=[2, 3],
            strategy="grey",
            tensor_parallel_size=2,
        )
    )
    keep = np.array([[True] * 6, [False, True, False, True, True, True]])
    scores = engine.score(example, keep)
    (llm,) = _LLM.instances
    assert llm.options["distributed_executor_backend"] == "mp" and llm.options["tensor_parallel_size"] == 2
    masker = PatchMasker(pixels, 2, 3, fill="grey")
    for prompt, row in zip(llm.prompts, keep):
        np.testing.assert_array_equal(np.asarray(prompt["multi_modal_data"]["image"]), masker.mask(row))
    assert scores[0].value == pytest.approx(scores[1].value)  # the stand-in reads only the text
    words = Example.from_text("w", TEXT, "words", question=QUESTION)
    with pytest.raises(ValueError, match="rows × cols"):
        engine.score(words, np.ones((1, words.n), dtype=bool))


def test_image_options_are_checked(fake_vllm, model_dir):
    with pytest.raises(ValueError, match="patch fill"):
        build_backend(_spec(model_dir, image_grid=[2, 2], strategy="remove"))
    with pytest.raises(ValueError, match=r"\[rows, cols\]"):
        build_backend(_spec(model_dir, image_grid=[2]))
    with pytest.raises(ValueError, match="grid"):
        build_backend(_spec(model_dir, image_grid=[0, 2], strategy="blur"))
    with pytest.raises(ValueError, match="masking strategy"):
        build_backend(_spec(model_dir, strategy="grey"))


@pytest.mark.gpu
@gpu
def test_gpu_engine_matches_transformers_on_cuda(tmp_path):
    directory = save_tiny_llama(tmp_path / "tiny", max_positions=512, hidden=256)
    example = Example.from_text("e", TEXT, "words", question=QUESTION, target="on the mat")
    keep = np.random.default_rng(0).random((32, example.n)) < 0.5
    engine = build_backend(
        _spec(
            directory,
            dtype="bfloat16",
            max_model_len=512,
            gpu_memory_utilization=0.3,
            engine_options={"enforce_eager": True},
        )
    )
    ours = [s.value for s in engine.score(example, keep)]
    engine.close()
    reference = build_backend({**_spec(directory), "name": "transformers", "device": "cuda", "dtype": "bfloat16"})
    theirs = [s.value for s in reference.score(example, keep)]
    np.testing.assert_allclose(ours, theirs, rtol=2e-2, atol=0.1)
    assert np.std(ours) > 0


@pytest.mark.gpu
@gpu
@pytest.mark.skipif(not os.environ.get("SPEX_RAY_VLM"), reason="set SPEX_RAY_VLM to a local vision-language model")
def test_gpu_vision_language_model_scores_masked_images(tmp_path):
    image_module = pytest.importorskip("PIL.Image")
    pixels = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    image_module.fromarray(pixels).save(tmp_path / "noise.png")
    example = image_example("img", tmp_path / "noise.png", 2, 2, question="What is shown?")
    template = os.environ.get("SPEX_RAY_VLM_TEMPLATE", "<|vision_start|><|image_pad|><|vision_end|>{question}")
    engine = build_backend(
        {
            "name": "vllm",
            "model": os.environ["SPEX_RAY_VLM"],
            "template": template,
            "chat_template": True,
            "image_grid": [2, 2],
            "strategy": "blur",
            "max_model_len": 4096,
            "gpu_memory_utilization": 0.8,
        }
    )
    scores = engine.score(example, np.array([[True] * 4, [False] * 4, [True, False, True, False]]))
    assert all(s.error is None and np.isfinite(s.value) for s in scores)
    assert engine.target(example)
