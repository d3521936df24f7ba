"""Tiny real models and tokenizers for tests: a 2-layer BERT and a WordPiece tokenizer trained
on a few sentences, saved as ordinary Hugging Face folders."""

from __future__ import annotations

import random
import sys
from pathlib import Path

SENTENCES = [
    "the cat sat on the mat and looked at the dog",
    "a dog barked at the cat in the garden",
    "researchers prune weights of pre-trained language models",
    "sparse subnetworks can transfer as well as the full model",
    "the mask is learned while the weights stay frozen",
    "magnitude pruning removes the smallest weights first",
    "winning tickets are found early in training",
    "the quick brown fox jumps over the lazy dog",
]
WORDS = " ".join(SENTENCES).split()


def make_tokenizer(out: Path, vocab_size: int = 120):
    """Train a BERT-style WordPiece tokenizer and save it as a HF tokenizer in ``out``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import WordPieceTrainer
    from transformers import PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(
        SENTENCES, WordPieceTrainer(vocab_size=vocab_size, special_tokens=special)
    )
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    fast.save_pretrained(str(out))
    return fast


def make_word_tokenizer(out: Path, words: int = 6000):
    """A BERT-style tokenizer whose words ``w0`` … ``w<words-1>`` are one token each (ids 5 on),
    with token types for a second segment: text of distinct words is distinct tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = {token: i for i, token in enumerate([*special, *(f"w{i}" for i in range(words))])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_input_names=["input_ids", "token_type_ids", "attention_mask"],
    )
    fast.save_pretrained(str(out))
    return fast


def bert_config(vocab_size: int, hidden: int = 32, layers: int = 2, intermediate: int = 64):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=intermediate,
        max_position_embeddings=64,
    )


def make_bert(out: Path, seed: int = 0, **kw) -> Path:
    """A randomly initialised tiny ``BertModel`` with its tokenizer, saved to ``out``."""
    import torch
    from transformers import BertModel

    tokenizer = make_tokenizer(out)
    torch.manual_seed(seed)
    model = BertModel(bert_config(len(tokenizer), **kw))
    model.save_pretrained(str(out))
    return out


def make_mlm_checkpoint(out: Path, layout: str, seed: int = 0) -> Path:
    """A tiny randomly initialised checkpoint saved as ``layout``: ``bert-mlm``
    (``BertForMaskedLM``: MLM head, no pooler weights), ``bert-pretraining``
    (``BertForPreTraining``: MLM and NSP heads, pooler), ``bert-nopooler`` (``BertModel``
    without a pooling layer), ``roberta-mlm`` (``RobertaForMaskedLM``: no pooler) or
    ``distilbert-mlm`` (``DistilBertForMaskedLM``: no pooler at all)."""
    import torch
    from transformers import (
        BertForMaskedLM,
        BertForPreTraining,
        BertModel,
        DistilBertConfig,
        DistilBertForMaskedLM,
        RobertaConfig,
        RobertaForMaskedLM,
    )

    tokenizer = make_tokenizer(out)
    vocab = len(tokenizer)
    torch.manual_seed(seed)
    if layout == "bert-mlm":
        model = BertForMaskedLM(bert_config(vocab))
    elif layout == "bert-pretraining":
        model = BertForPreTraining(bert_config(vocab))
    elif layout == "bert-nopooler":
        model = BertModel(bert_config(vocab), add_pooling_layer=False)
    elif layout == "roberta-mlm":
        config = RobertaConfig(
            vocab_size=vocab, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=72, pad_token_id=tokenizer.pad_token_id,
        )  # fmt: skip
        model = RobertaForMaskedLM(config)
    elif layout == "distilbert-mlm":
        config = DistilBertConfig(
            vocab_size=vocab, dim=32, n_layers=2, n_heads=2, hidden_dim=64,
            max_position_embeddings=64, pad_token_id=tokenizer.pad_token_id,
        )  # fmt: skip
        model = DistilBertForMaskedLM(config)
    else:
        raise ValueError(layout)
    model.save_pretrained(str(out))
    return out


def sentence(rng: random.Random, cue: str) -> str:
    """A few random words of the tiny sentences around a cue word."""
    words = [rng.choice(WORDS) for _ in range(rng.randint(3, 8))] + [cue]
    rng.shuffle(words)
    return " ".join(words)


def write_tsv(path: Path, header: list[str] | None, rows: list[list[object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ([header] if header else []) + rows
    path.write_text("".join("\t".join(str(c) for c in row) + "\n" for row in lines))


def write_sst2(folder: Path, train: int = 48, dev: int = 24, seed: int = 0) -> Path:
    """GLUE's SST-2 layout (``sentence<TAB>label``); the label is told by a cue word."""
    rng = random.Random(seed)
    for name, n in (("train.tsv", train), ("dev.tsv", dev)):
        rows: list[list[object]] = []
        for _ in range(n):
            label = rng.randint(0, 1)
            rows.append([sentence(rng, "cat" if label else "dog"), label])
        write_tsv(folder / name, ["sentence", "label"], rows)
    return folder


if __name__ == "__main__":
    # `python tests/tiny.py DIR`: DIR/model (a tiny BERT) and DIR/SST-2, for install checks.
    root = Path(sys.argv[1])
    make_bert(root / "model")
    write_sst2(root / "SST-2")


def interrupt_mask_training(monkeypatch, step: int):
    """Make mask training stop with ``KeyboardInterrupt`` right after optimiser step ``step``
    (as Ctrl-C would); returns a function that lets it run normally again."""
    from tamt_cli.methods import mask_training

    original = mask_training._Hooks.after_step

    def crash(self, done: int) -> None:
        original(self, done)
        if done == step:
            raise KeyboardInterrupt

    monkeypatch.setattr(mask_training._Hooks, "after_step", crash)
    return lambda: monkeypatch.setattr(mask_training._Hooks, "after_step", original)
