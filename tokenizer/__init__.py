"""The tokenizer: a byte-level BPE trained on a stratified sample of the build, or a released one loaded.

    tokenizer/specials.py   the special-token table (names, ids, placement)
    tokenizer/train.py      pre-tokenisation and BPE training
    tokenizer/chat.py       the chat template and tokenizer_config.json
    tokenizer/files.py      save, copy, load (any fsspec URI); RnjTokenizer, the handle consumers use
    tokenizer/sample.py     which documents are sampled for training and which are held out
    tokenizer/encode.py     tokenize a documents RecordBatch (the tokenize job's task function)
    tokenizer/report.py     bytes per token by domain

Engine-free: nothing here imports pyspark. docs/tokenizer.md is the user's guide.
"""

from tokenizer.files import (
    RnjTokenizer,
    committed_tokenizer_uri,
    load_committed_tokenizer,
    load_tokenizer,
    save_tokenizer,
)
from tokenizer.specials import SpecialToken, special_token_layout, total_vocab_size
from tokenizer.train import train_tokenizer

__all__ = [
    "RnjTokenizer",
    "SpecialToken",
    "committed_tokenizer_uri",
    "load_committed_tokenizer",
    "load_tokenizer",
    "save_tokenizer",
    "special_token_layout",
    "total_vocab_size",
    "train_tokenizer",
]
