"""The model-based grader's engine-free side: its feature name, the loss-function type, the fingerprint.

The scorer itself (mean next-token loss under a small reference checkpoint) lives in `model/reference.py`,
since `pipeline/` never imports the model; the grade job passes it to `grade_batch` as a function.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Callable

from pipeline.grading.config import ReferenceModelConfig

REFERENCE_FEATURE = "reference_loss"
LossFunction = Callable[[list[str]], list[float]]
"""Texts -> mean token loss (nats) of each under the reference model."""


def reference_fingerprint(cfg: ReferenceModelConfig) -> str:
    """sha256 over the checkpoint's and the tokenizer's files: part of the grade job's input hash."""
    import fsspec

    digest = hashlib.sha256()
    tokenizer = cfg.tokenizer_path
    if not tokenizer.endswith(".json"):
        tokenizer = posixpath.join(tokenizer, "tokenizer.json")
    for path in (posixpath.join(cfg.checkpoint_path, "config.json"),
                 posixpath.join(cfg.checkpoint_path, "model.safetensors"), tokenizer):
        with fsspec.open(path, "rb") as f:
            digest.update(hashlib.sha256(f.read()).digest())
    return digest.hexdigest()
