"""The special-token table: which names get which ids, decided from `[tokenizer]` alone.

The table is `num_special_tokens` slots long. It starts at id `vocab_size` (placement `after`, the
Llama-3 and Rnj-1 layout: 128000 for a 128K vocabulary) or at id 0 (placement `before`). The named
`special_tokens` come first in their order, then the `extra_tokens` (by default the ten trace markers of
pipeline/traces/format.py), then reserved slots named `<|reserved_special_token_N|>`, N counting on from
the highest N already named. The named ids are the released ones: bos 128000, pad 128001, start/end
header 128006/128007, eot 128009; the trace markers take 128010-128019, reserved slots the rest to 128255.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pipeline.config import TokenizerConfig

RESERVED_NAME = "<|reserved_special_token_{}|>"
_RESERVED = re.compile(r"^<\|reserved_special_token_(\d+)\|>$")


@dataclass(frozen=True)
class SpecialToken:
    content: str
    id: int
    special: bool
    """True for control tokens (never produced by document text, skipped by `skip_special_tokens`);
    False for `extra_tokens`, which documents contain and which always decode."""


def first_special_id(cfg: TokenizerConfig) -> int:
    return cfg.vocab_size if cfg.special_tokens_placement == "after" else 0


def first_ordinary_id(cfg: TokenizerConfig) -> int:
    return 0 if cfg.special_tokens_placement == "after" else cfg.num_special_tokens


def special_token_layout(cfg: TokenizerConfig) -> list[SpecialToken]:
    """Every special slot in id order."""
    start = first_special_id(cfg)
    named = [(name, True) for name in cfg.special_tokens] + [(name, False) for name in cfg.extra_token_names()]
    taken = {name for name, _ in named}
    numbers = [int(m.group(1)) for m in map(_RESERVED.match, taken) if m]
    next_number = max(numbers) + 1 if numbers else 0
    while len(named) < cfg.num_special_tokens:
        name = RESERVED_NAME.format(next_number)
        next_number += 1
        if name not in taken:
            named.append((name, True))
    return [SpecialToken(name, start + i, special) for i, (name, special) in enumerate(named)]


def total_vocab_size(cfg: TokenizerConfig) -> int:
    """Ordinary plus special ids: the embedding table's row count (128256 for the released layout)."""
    return cfg.vocab_size + cfg.num_special_tokens
