"""A tiny causal LM and BPE tokenizer made in the test run (random weights, nothing downloaded)."""

from __future__ import annotations

from pathlib import Path

CORPUS = [
    "The cat sat on the mat. The dog barked at the cat, and the cat ran away.",
    "Paris is the capital of France. Berlin is the capital of Germany.",
    "Question: Where did the cat sit?\nAnswer: on the mat\n\nContext:",
    "Marie Curie won two Nobel prizes. She was born in Warsaw in 1867.",
    "The river runs through the old town before it reaches the sea.",
]
CHAT_TEMPLATE = (
    "<s>{% for m in messages %}[{{ m['role'] }}]\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}[assistant]\n{% endif %}"
)


def byte_level_tokenizer(vocab_size: int = 400, *, chat: bool = True, bos: bool = True):
    """A byte-level BPE tokenizer (GPT-2 style) trained on CORPUS; adds <s> like Llama when ``bos``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<s>", "</s>", "<pad>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tokenizer.train_from_iterator(CORPUS * 4, trainer)
    if bos:
        tokenizer.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 0)]
        )
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    if chat:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def metaspace_tokenizer():
    """A SentencePiece-style tokenizer like Llama 2's (Metaspace: a dummy prefix ▁ starts every text)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first", split=False)
    tokenizer.decoder = decoders.Metaspace(prepend_scheme="first", split=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"])
    tokenizer.train_from_iterator(CORPUS * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def save_tiny_llama(
    directory: Path, *, seed: int = 0, max_positions: int = 512, layers: int = 2, hidden: int = 32
) -> Path:
    """Save a random Llama (``layers`` layers, ``hidden`` wide) and its tokenizer to ``directory``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = byte_level_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    with torch.no_grad():  # a wider spread of logits than the default init, so answers vary with the prompt
        model.lm_head.weight.normal_(0.0, 0.5)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory



IMAGE_TOKEN = "<image>"


def save_tiny_idefics3(directory: Path, *, seed: int = 0, image_size: int = 32, hidden: int = 256) -> Path:
    """Save a random Idefics3 vision-language model (a 2-layer vision tower on 8-pixel patches, pixel
    shuffle by 2, a 2-layer Llama ``hidden`` wide), its tokenizer and its processor to ``directory``.

    A prompt holds ``<image>`` where the image goes; the processor (or vLLM) expands it into
    ``<fake_token_around_image><global-img>`` + (image_size / 16)² image tokens + ``<fake_token_around_image>``.
    Images are resized to ``image_size`` on their longest edge and never split into tiles."""
    import torch
    from transformers import (
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
        Idefics3VisionConfig,
        LlamaConfig,
    )

    tokenizer = byte_level_tokenizer()
    specials = ["<fake_token_around_image>", IMAGE_TOKEN, "<end_of_utterance>", "<global-img>"]
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    patch, scale = 8, 2
    vision = Idefics3VisionConfig(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=image_size,
        patch_size=patch,
    )
    config = Idefics3Config(
        vision_config=vision.to_dict(),
        text_config=text.to_dict(),
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        scale_factor=scale,
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = Idefics3ForConditionalGeneration(config)
    with torch.no_grad():  # as save_tiny_llama: answers that vary with the input
        model.lm_head.weight.normal_(0.0, 0.5)
    model.save_pretrained(directory)
    size = {"longest_edge": image_size}
    image_processor = Idefics3ImageProcessor(do_image_splitting=False, size=size, max_image_size=size)
    image_tokens = (image_size // patch // scale) ** 2
    processor = Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=image_tokens)
    processor.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
