import numpy as np
import pytest

pytest.importorskip("tokenizers")
pytest.importorskip("transformers")

from tiny_lm import byte_level_tokenizer, metaspace_tokenizer  # noqa: E402

from connectors.base import Example  # noqa: E402
from connectors.features.documents import documents_context, documents_example  # noqa: E402
from connectors.features.prompts import PromptFormat, build_prompt, encode_piece, split_gap  # noqa: E402

TEMPLATE = "Context: {context}\n\nQuestion: {question}\nAnswer:"
TEXT = "The cat sat on the mat.  Paris is the capital of France!\nThe dog barked."
QUESTION = "Where did the cat sit?"
DOCUMENTS = [
    {"title": "Cats", "text": "The cat sat on the mat. The dog barked at the cat."},
    {"title": "Capitals", "sentences": ["Paris is the capital of France.", "Berlin is the capital of Germany."]},
]


@pytest.fixture(scope="module")
def tokenizer():
    return byte_level_tokenizer()


def _encode(tokenizer, text):
    return tokenizer.encode(text, add_special_tokens=True)


def _masked_text(example, keep, before, after, strategy="remove", mask_token="[MASK]"):
    """The prompt text a row stands for, built independently of connectors.features.prompts."""
    text, spans = example.text, example.spans
    prefix = before.rstrip(" ")
    out = prefix
    previous = 0
    for i, (start, end) in enumerate(spans):
        gap = (before[len(prefix) :] if i == 0 else "") + text[previous:start]
        fixed = "" if not gap.strip() else gap.rstrip(" ")
        separator = gap[len(fixed) :]
        out += fixed
        if keep[i]:
            out += separator + text[start:end]
        elif strategy == "mask_token":
            out += separator + mask_token
        previous = end
    return out + text[previous:] + after


@pytest.mark.parametrize("unit", ["words", "sentences"])
def test_unmasked_prompt_is_the_tokenization_of_the_rendered_text(tokenizer, unit):
    example = Example.from_text("e", TEXT, unit, question=QUESTION)
    prompt = build_prompt(tokenizer, PromptFormat(template=TEMPLATE), example)
    ids = prompt.ids(np.ones((1, example.n), dtype=bool))[0]
    rendered = TEMPLATE.replace("{context}", TEXT).replace("{question}", QUESTION)
    assert ids.tolist() == _encode(tokenizer, rendered)
    assert ids[0] == tokenizer.bos_token_id
    assert prompt.full_length() == len(ids)


@pytest.mark.parametrize("strategy", ["remove", "mask_token"])
def test_masked_prompts_concatenate_pieces_tokenized_once(tokenizer, strategy):
    example = Example.from_text("e", TEXT, "words", question=QUESTION)
    prompt = build_prompt(tokenizer, PromptFormat(template=TEMPLATE), example, strategy=strategy, mask_token="[MASK]")
    keep = np.random.default_rng(0).random((20, example.n)) < 0.5
    keep[0] = False
    before, after = TEMPLATE.replace("{question}", QUESTION).split("{context}")
    for row, ids in zip(keep, prompt.ids(keep)):
        expected = _masked_text(example, row, before, after, strategy)
        # byte-level BPE: every piece starts at a pre-tokenizer boundary, so the concatenation
        # is exactly the tokenization of the masked text
        assert ids.tolist() == _encode(tokenizer, expected)
        assert tokenizer.decode(ids, skip_special_tokens=True) == expected


def test_feature_tokens_do_not_shift_between_masks(tokenizer):
    example = Example.from_text("e", TEXT, "words", question=QUESTION)
    prompt = build_prompt(tokenizer, PromptFormat(template=TEMPLATE), example)
    full = prompt.ids(np.ones((1, example.n), dtype=bool))[0].tolist()
    keep = np.ones(example.n, dtype=bool)
    keep[[1, 4]] = False
    masked = prompt.ids(keep[None, :])[0].tolist()
    pieces = {i: encode_piece(tokenizer, " " + example.features[i]) for i in (1, 4)}
    for piece in pieces.values():
        start = next(s for s in range(len(full)) if full[s : s + len(piece)] == piece)
        del full[start : start + len(piece)]
    assert masked == full


def test_titles_stay_when_their_sentences_are_masked(tokenizer):
    example = documents_example("d", DOCUMENTS, "sentences", question=QUESTION)
    assert example.n == 4
    prompt = build_prompt(tokenizer, PromptFormat(template=TEMPLATE), example)
    keep = np.array([[True, True, True, True], [False, True, False, False], [False, False, False, False]])
    before, after = TEMPLATE.replace("{question}", QUESTION).split("{context}")
    texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in prompt.ids(keep)]
    assert texts[0] == before + example.text + after
    assert texts[1] == "Context: Cats\n The dog barked at the cat.\n\nCapitals\n" + after
    assert texts[2] == "Context: Cats\n\n\nCapitals\n" + after
    for ids, row in zip(prompt.ids(keep), keep):
        assert ids.tolist() == _encode(tokenizer, _masked_text(example, row, before, after))


def test_documents_context_and_units():
    text, documents, sentences = documents_context(DOCUMENTS)
    assert text == (
        "Cats\nThe cat sat on the mat. The dog barked at the cat.\n\n"
        "Capitals\nParis is the capital of France. Berlin is the capital of Germany."
    )
    assert [text[s:e] for s, e in documents] == text.split("\n\n")
    assert [text[s:e] for s, e in sentences] == [
        "The cat sat on the mat.",
        "The dog barked at the cat.",
        "Paris is the capital of France.",
        "Berlin is the capital of Germany.",
    ]
    example = documents_example("d", DOCUMENTS, "documents", target="on the mat")
    assert example.features == tuple(text.split("\n\n")) and example.target == "on the mat"
    for bad in ([], [{"text": "no title"}], [{"title": "T", "text": "  "}], [{"title": "T", "sentences": []}]):
        with pytest.raises(ValueError):
            documents_context(bad)
    with pytest.raises(ValueError, match="unit"):
        documents_example("d", DOCUMENTS, "paragraphs")


def test_chat_template_is_rendered_once_and_split_around_the_context(tokenizer):
    example = Example.from_text("e", TEXT, "sentences", question=QUESTION)
    prompt_format = PromptFormat(template=TEMPLATE, chat_template=True, system="Answer briefly.")
    prompt = build_prompt(tokenizer, prompt_format, example)
    ids = prompt.ids(np.ones((1, example.n), dtype=bool))[0]
    messages = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": TEMPLATE.replace("{context}", TEXT).replace("{question}", QUESTION)},
    ]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered.startswith("<s>[system]") and rendered.endswith("[assistant]\n")
    # the template carries BOS; none is added on top of it
    assert ids.tolist() == tokenizer.encode(rendered, add_special_tokens=False)
    assert (ids == tokenizer.bos_token_id).sum() == 1


def test_bos_follows_the_tokenizer_unless_told():
    example = Example.from_text("e", "The cat sat.", "words")
    no_bos = byte_level_tokenizer(bos=False)
    ids = build_prompt(no_bos, PromptFormat(), example).ids(np.ones((1, 3), dtype=bool))[0]
    assert ids.tolist() == no_bos.encode("The cat sat.", add_special_tokens=False)
    forced = build_prompt(no_bos, PromptFormat(add_bos=True), example).ids(np.ones((1, 3), dtype=bool))[0]
    assert forced.tolist() == [no_bos.bos_token_id, *ids.tolist()]


def test_encode_piece_drops_the_sentencepiece_dummy_prefix():
    tokenizer = metaspace_tokenizer()
    plain = tokenizer.convert_ids_to_tokens(tokenizer.encode("cat", add_special_tokens=False))
    piece = tokenizer.convert_ids_to_tokens(encode_piece(tokenizer, "cat"))
    assert plain[0].startswith("\u2581") and not piece[0].startswith("\u2581")
    in_context = tokenizer.encode("The\ncat", add_special_tokens=False)
    assert encode_piece(tokenizer, "\ncat") == in_context[-len(encode_piece(tokenizer, "\ncat")) :]
    assert encode_piece(tokenizer, "") == []


def test_split_gap():
    assert split_gap("  ") == ("", "  ")
    assert split_gap("\n\nTitle\n") == ("\n\nTitle\n", "")
    assert split_gap(" | Title: ") == (" | Title:", " ")


def test_image_prompts_do_not_depend_on_the_mask(tokenizer):
    example = Example("i", "/tmp/image.png", ("r0c0", "r0c1"), None, question="What is shown?")
    prompt_format = PromptFormat(template="<image> {question}\nAnswer:")
    prompt = build_prompt(tokenizer, prompt_format, example, context=False)
    rows = prompt.ids(np.array([[True, True], [False, True], [False, False]]))
    assert all(r.tolist() == _encode(tokenizer, "<image> What is shown?\nAnswer:") for r in rows)
    with pytest.raises(ValueError, match="must not contain"):
        build_prompt(tokenizer, PromptFormat(template="{context} {question}"), example, context=False)


@pytest.mark.parametrize(
    "template, question, message",
    [
        ("{question}", None, "exactly once"),
        ("{context} {context}", None, "exactly once"),
        ("{context} {question}", None, "has no question"),
        ("{context}", "Why?", "has no {question}"),
    ],
)
def test_templates_that_do_not_fit_the_example(tokenizer, template, question, message):
    example = Example.from_text("e", "The cat sat.", "words", question=question)
    with pytest.raises(ValueError, match=message):
        build_prompt(tokenizer, PromptFormat(template=template), example)


def test_a_chat_template_that_rewrites_the_message_is_refused():
    tokenizer = byte_level_tokenizer()
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] | lower }}{% endfor %}"
    example = Example.from_text("e", "The cat sat.", "words")
    with pytest.raises(ValueError, match="verbatim"):
        build_prompt(tokenizer, PromptFormat(chat_template=True), example)


def test_tiny_qa_contexts_are_their_documents():
    import json
    from pathlib import Path

    import connectors

    lines = (Path(connectors.__file__).parent / "data" / "tiny_qa.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) >= 5 and len({r["id"] for r in records}) == len(records)
    for record in records:
        assert set(record) == {"id", "question", "answer", "context", "documents"}
        assert record["context"] == documents_context(record["documents"])[0]
        example = documents_example(record["id"], record["documents"], "sentences", question=record["question"])
        assert 3 <= example.n <= 8
