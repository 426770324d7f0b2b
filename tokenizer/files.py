"""Saving and loading tokenizers on any fsspec filesystem, and the handle every consumer uses.

    from tokenizer import load_committed_tokenizer
    tok = load_committed_tokenizer(cfg)          # OUTPUT/tokenize/tokenizer/, hash-checked
    tok.bos_id, tok.eos_id, tok.pad_id           # 128000, 128009, 128001 in the released layout
    tok.special_ids["<|end_of_text|>"]           # any special token by name
    tok.encode_batch(texts)                      # document text: specials never matched, no bos
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import dataclass, field
from itertools import chain

import fsspec
import numpy as np
from tokenizers import Tokenizer

from pipeline.commit import JobOutput
from pipeline.config import BuildConfig, TokenizerConfig
from tokenizer.chat import tokenizer_config
from tokenizer.pieces import PieceEncoder

TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
JOB = "tokenize"
FOLDER = "tokenizer"


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read(uri: str) -> bytes:
    with fsspec.open(uri, "rb") as f:
        return f.read()


def _write(uri: str, data: bytes) -> None:
    fs, path = fsspec.core.url_to_fs(uri)
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    with fs.open(path, "wb") as f:
        f.write(data)


def tokenizer_file(uri: str) -> str:
    """`uri` itself when it names a .json file, else the tokenizer.json inside that folder."""
    return uri if uri.endswith(".json") else posixpath.join(uri.rstrip("/"), TOKENIZER_FILE)


def save_tokenizer(tokenizer: Tokenizer, folder_uri: str, cfg: TokenizerConfig) -> str:
    """Write tokenizer.json and tokenizer_config.json (with the chat template); returns tokenizer.json's sha256."""
    data = tokenizer.to_str(pretty=True).encode("utf-8")
    _write(posixpath.join(folder_uri, TOKENIZER_FILE), data)
    config = json.dumps(tokenizer_config(cfg), indent=2, ensure_ascii=False) + "\n"
    _write(posixpath.join(folder_uri, CONFIG_FILE), config.encode("utf-8"))
    return sha256_bytes(data)


def copy_tokenizer(source_uri: str, folder_uri: str) -> str:
    """Copy an existing tokenizer.json (and the tokenizer_config.json beside it, if any); returns its sha256."""
    source = tokenizer_file(source_uri)
    data = _read(source)
    Tokenizer.from_str(data.decode("utf-8"))  # fail here, on the driver, if it is not a tokenizer
    _write(posixpath.join(folder_uri, TOKENIZER_FILE), data)
    beside = posixpath.join(posixpath.dirname(source), CONFIG_FILE)
    fs, path = fsspec.core.url_to_fs(beside)
    if fs.exists(path):
        _write(posixpath.join(folder_uri, CONFIG_FILE), _read(beside))
    return sha256_bytes(data)


@dataclass
class RnjTokenizer:
    """A loaded tokenizer with its special ids and the sha256 of its tokenizer.json."""

    tokenizer: Tokenizer
    sha256: str
    bos_id: int
    eos_id: int
    pad_id: int
    special_ids: dict[str, int] = field(default_factory=dict)
    """Every added token (control tokens and extra markers) by name."""
    _fast: list = field(default_factory=list, init=False, repr=False, compare=False)
    """[PieceEncoder or None] once looked for (tokenizer/pieces.py)."""

    @property
    def vocab_size(self) -> int:
        """Rows of the embedding table: ordinary plus special ids."""
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        """Token ids of document text: no bos, and control-token names in the text stay ordinary text."""
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch_fast(texts, add_special_tokens=False)]

    def encode_batch_flat(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The ids of `encode_batch` as (offsets int64, ids int32), text i's ids at ids[offsets[i]:offsets[i + 1]];
        through tokenizer/pieces.py's faster encoder (the same ids) when this tokenizer allows it."""
        if not self._fast:
            self._fast.append(PieceEncoder.for_tokenizer(self.tokenizer))
        if self._fast[0] is not None:
            return self._fast[0].encode_batch(texts)
        ids = self.encode_batch(texts)
        lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        offsets = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return offsets, np.fromiter(chain.from_iterable(ids), dtype=np.int32, count=int(offsets[-1]))

    def decode(self, ids: list[int]) -> str:
        """The exact text of `ids` (special tokens included as their names)."""
        return self.tokenizer.decode(ids, skip_special_tokens=False)


def load_tokenizer(uri: str, cfg: TokenizerConfig | None = None, expect_sha256: str | None = None) -> RnjTokenizer:
    """Load a tokenizer.json (or a folder holding one). Role names come from the tokenizer_config.json
    beside it when there is one, else from `cfg`; `expect_sha256` guards against a changed file."""
    cfg = cfg or TokenizerConfig()
    path = tokenizer_file(uri)
    data = _read(path)
    digest = sha256_bytes(data)
    if expect_sha256 is not None and digest != expect_sha256:
        raise ValueError(f"{path} has sha256 {digest}, expected {expect_sha256}: the tokenizer changed; rerun the tokenize job")
    tokenizer = Tokenizer.from_str(data.decode("utf-8"))
    tokenizer.encode_special_tokens = True  # document text never produces control tokens
    roles = _roles(posixpath.join(posixpath.dirname(path), CONFIG_FILE), cfg)
    special_ids = {t.content: i for i, t in sorted(tokenizer.get_added_tokens_decoder().items())}
    ids = {}
    for role, name in roles.items():
        if name not in special_ids:
            raise ValueError(f"{path}: the {role} {name!r} is not one of its added tokens; "
                             f"set [tokenizer] {role} to one of them")
        ids[role] = special_ids[name]
    return RnjTokenizer(tokenizer, digest, ids["bos_token"], ids["eos_token"], ids["pad_token"], special_ids)


def _roles(config_uri: str, cfg: TokenizerConfig) -> dict[str, str]:
    roles = {"bos_token": cfg.bos_token, "eos_token": cfg.eos_token, "pad_token": cfg.pad_token}
    fs, path = fsspec.core.url_to_fs(config_uri)
    if fs.exists(path):
        with fs.open(path, "r") as f:
            saved = json.load(f)
        for role in roles:
            value = saved.get(role)
            if isinstance(value, dict):  # older transformers write {"content": ...}
                value = value.get("content")
            if isinstance(value, str):
                roles[role] = value
    return roles


def committed_tokenizer_uri(cfg: BuildConfig) -> str:
    """The tokenizer folder of the build's committed tokenize job (raises if that job is not committed)."""
    output = JobOutput(cfg.build.output, JOB)
    if output.committed_hash() is None:
        raise RuntimeError(f"the tokenize job of build {cfg.build.name!r} is not committed: run it first")
    return output.child(FOLDER)


def load_committed_tokenizer(cfg: BuildConfig) -> RnjTokenizer:
    """The build's tokenizer, checked against the sha256 the tokenize job recorded in report.json."""
    output = JobOutput(cfg.build.output, JOB)
    folder = committed_tokenizer_uri(cfg)
    with fsspec.open(output.child("report.json"), "r") as f:
        expected = json.load(f)["tokenizer"]["sha256"]
    return load_tokenizer(folder, cfg.tokenizer, expect_sha256=expected)
