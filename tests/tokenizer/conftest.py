"""A tiny tokenizer trained once per session on the sample corpus (vocab 800, about 300 KB of text)."""

from __future__ import annotations

import pytest

from pipeline.config import TokenizerConfig
from tests.tokenizer.corpus import sample_documents

TINY = TokenizerConfig(vocab_size=800, sample_bytes=300_000)  # the trace markers as extra tokens


@pytest.fixture(scope="session")
def documents(sample_corpus) -> list[dict]:
    return sample_documents(sample_corpus)


@pytest.fixture(scope="session")
def training_texts(documents) -> list[str]:
    """About 300 KB: up to 60 KB of each domain."""
    texts, size = [], {}
    for doc in documents:
        domain = doc["domain"]
        if size.get(domain, 0) < 60_000:
            texts.append(doc["text"])
            size[domain] = size.get(domain, 0) + len(doc["text"].encode())
    return texts


@pytest.fixture(scope="session")
def trained(training_texts):
    from tokenizer import train_tokenizer

    return train_tokenizer(training_texts, TINY)


@pytest.fixture(scope="session")
def saved(trained, tmp_path_factory):
    """(folder, sha256) of the trained tokenizer saved with its tokenizer_config.json."""
    from tokenizer import save_tokenizer

    folder = tmp_path_factory.mktemp("tokenizer")
    return folder, save_tokenizer(trained, str(folder), TINY)


@pytest.fixture(scope="session")
def tok(saved):
    from tokenizer import load_tokenizer

    folder, sha = saved
    return load_tokenizer(str(folder), TINY, expect_sha256=sha)
