"""Tiny real models and tokenizers for tests: a 2-layer BERT and a WordPiece tokenizer trained
on a few sentences, saved as ordinary Hugging Face folders."""

from __future__ import annotations

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
