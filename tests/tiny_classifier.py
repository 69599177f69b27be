"""Tiny random sequence classifiers and their tokenizers, made in the test run (nothing downloaded)."""

from __future__ import annotations

from pathlib import Path

LABELS = {0: "negative", 1: "neutral", 2: "positive"}
WORDS = "the a film movie is was not bad good great at all and but plot acting . , !".split()


def save_tiny_bert(directory: Path, *, seed: int = 0) -> Path:
    """A random 1-layer BERT classifier over LABELS with a WordPiece tokenizer ([MASK] included)."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {token: i for i, token in enumerate(special + WORDS)}
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, id2label=LABELS,
                        label2id={name: i for i, name in LABELS.items()}, pad_token_id=vocab["[PAD]"])
    torch.manual_seed(seed)
    BertForSequenceClassification(config).save_pretrained(directory)
    fast.save_pretrained(directory)
    return directory


def save_tiny_llama_classifier(directory: Path, *, seed: int = 0) -> Path:
    """A random 1-layer Llama classifier over LABELS (decoder head: the last token's logits; no pad token)."""
    import torch
    from tiny_lm import byte_level_tokenizer
    from transformers import LlamaConfig, LlamaForSequenceClassification

    tokenizer = byte_level_tokenizer(chat=False)
    tokenizer.pad_token = None
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
                         id2label=LABELS, label2id={name: i for i, name in LABELS.items()},
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    LlamaForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
