"""Train the byte-level BPE (Hugging Face `tokenizers`) and give it its special tokens.

Pre-tokenisation, in order (docs/tokenizer.md shows examples):
  1. optional NFC normaliser (`[tokenizer] normalization`, off by default: see that field);
  2. a regular-expression split in the Llama-3 style, changed for code and math: every digit is its own
     piece (numbers are spelled digit by digit, so arithmetic sees aligned digits), a run of spaces or tabs
     stays one piece (its last space joins the next word), newlines with the blanks before them form one
     piece, and punctuation runs stay together;
  3. byte-level mapping, so every byte string is representable and decoding is exact.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Iterator

from tokenizers import (
    AddedToken,
    Regex,
    Tokenizer,
    decoders,
    models,
    normalizers,
    pre_tokenizers,
    processors,
    trainers,
)

from pipeline.config import TokenizerConfig
from tokenizer.specials import SpecialToken, special_token_layout

PRETOKENIZE_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"  # English contractions
    r"|[^\r\n\p{L}\p{N}]?\p{L}+"  # a word, with one leading space or symbol
    r"|\p{N}"  # one digit
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*"  # a punctuation run
    r"|\s*[\r\n]+"  # newlines (and the blanks that end the line before them)
    r"|\s+(?!\S)"  # blanks up to the last one before a word: indentation
    r"|\s+"  # trailing blanks
)


def new_tokenizer(cfg: TokenizerConfig) -> Tokenizer:
    """An empty byte-level BPE tokenizer with the pre-tokenisation above."""
    tokenizer = Tokenizer(models.BPE(byte_fallback=False))
    if cfg.normalization == "nfc":
        tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def train_tokenizer(texts: Iterable[str], cfg: TokenizerConfig) -> Tokenizer:
    """Learn `cfg.vocab_size` ordinary tokens from `texts` and place the special-token table."""
    layout = special_token_layout(cfg)
    tokenizer = new_tokenizer(cfg)
    before = cfg.special_tokens_placement == "before"
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size + (cfg.num_special_tokens if before else 0),
        min_frequency=cfg.min_frequency,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[_added(t) for t in layout] if before else [],
    )
    tokenizer.train_from_iterator(_nfc(texts), trainer=trainer)
    learned = tokenizer.get_vocab_size(with_added_tokens=False) - (cfg.num_special_tokens if before else 0)
    if learned != cfg.vocab_size:
        raise ValueError(
            f"the training sample taught only {learned} of vocab_size = {cfg.vocab_size} ordinary tokens "
            "(not enough distinct text, or min_frequency too high): raise [tokenizer] sample_bytes, lower "
            "min_frequency or lower vocab_size"
        )
    _register(tokenizer, layout)
    if cfg.add_bos:
        bos = next(t for t in layout if t.content == cfg.bos_token)
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos.content} $A", pair=f"{bos.content} $A:0 {bos.content}:1 $B:1",
            special_tokens=[(bos.content, bos.id)],
        )
    _check_layout(tokenizer, layout)
    return tokenizer


def _added(token: SpecialToken) -> AddedToken:
    return AddedToken(token.content, single_word=False, lstrip=False, rstrip=False, normalized=False,
                      special=token.special)


def _register(tokenizer: Tokenizer, layout: list[SpecialToken]) -> None:
    """Add the table in id order (for `after`, ids are handed out from the end of the vocabulary)."""
    for token in layout:
        if token.special:
            tokenizer.add_special_tokens([_added(token)])
        else:
            tokenizer.add_tokens([_added(token)])


def _check_layout(tokenizer: Tokenizer, layout: list[SpecialToken]) -> None:
    decoder = tokenizer.get_added_tokens_decoder()
    for token in layout:
        got = tokenizer.token_to_id(token.content)
        assert got == token.id, f"{token.content} got id {got}, the table says {token.id}"
        assert decoder[got].special == token.special, f"{token.content}: special flag not kept"


def _nfc(texts: Iterable[str]) -> Iterator[str]:
    for text in texts:
        yield text if unicodedata.is_normalized("NFC", text) else unicodedata.normalize("NFC", text)
