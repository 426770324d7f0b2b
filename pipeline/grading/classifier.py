"""An optional linear domain classifier: hashed word n-grams, softmax regression trained with numpy.

Trained in the job's driver on the labelled JSONL files named in `[grade.domain] classifier_paths`
({"text": ..., "label": "math" | "science" | "general"}), then shipped to the tasks as a few arrays.
Training is deterministic: zero initial weights, full-batch gradient steps, no shuffling.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass

import fsspec
import numpy as np

from pipeline.filters.text import alpha_words
from pipeline.grading.config import DomainConfig

PROSE_LABELS = ("general", "math", "science")


def hashed_features(text: str, buckets: int, ngrams: int) -> tuple[np.ndarray, np.ndarray]:
    """(bucket indices, L2-normalised counts) of the word 1..ngrams-grams of `text` (crc32, not hash())."""
    tokens = alpha_words(text)
    counts: dict[int, float] = {}
    for n in range(1, ngrams + 1):
        for i in range(len(tokens) - n + 1):
            key = zlib.crc32(" ".join(tokens[i:i + n]).encode()) % buckets
            counts[key] = counts.get(key, 0.0) + 1.0
    if not counts:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    index = np.fromiter(sorted(counts), dtype=np.int64)
    values = np.array([counts[k] for k in index.tolist()], dtype=np.float32)
    return index, values / np.float32(np.linalg.norm(values))


@dataclass(frozen=True, eq=False)
class LinearClassifier:
    labels: tuple[str, ...]
    weights: np.ndarray
    """(buckets, labels) float32."""
    bias: np.ndarray
    """(labels,) float32."""
    ngrams: int
    training_accuracy: float

    def probabilities(self, text: str) -> np.ndarray:
        index, values = hashed_features(text, self.weights.shape[0], self.ngrams)
        logits = values @ self.weights[index] + self.bias
        return _softmax(logits[None, :])[0]

    def predict(self, text: str) -> tuple[str, float]:
        """(label, probability) of the most likely label (ties: the first label)."""
        probs = self.probabilities(text)
        best = int(np.argmax(probs))
        return self.labels[best], float(probs[best])


def load_labelled(paths: tuple[str, ...]) -> list[tuple[str, str]]:
    """(text, label) pairs from JSONL files; a bad line or label raises ValueError naming file and line."""
    examples = []
    for path in paths:
        with fsspec.open(path, "rt", encoding="utf-8", compression="infer") as f:
            for number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    text, label = record["text"], record["label"]
                except (ValueError, KeyError, TypeError) as err:
                    raise ValueError(f"{path}:{number}: need a JSON object with 'text' and 'label' ({err})") from err
                if label not in PROSE_LABELS:
                    raise ValueError(f"{path}:{number}: label {label!r} is not one of {PROSE_LABELS}")
                examples.append((str(text), label))
    if not examples:
        raise ValueError(f"no labelled examples in {list(paths)}: list files with JSON lines {{text, label}}")
    return examples


def files_fingerprint(paths: tuple[str, ...]) -> str:
    """sha256 over the bytes of the labelled files: part of the job's input hash, so new labels rerun it."""
    digest = hashlib.sha256()
    for path in paths:
        with fsspec.open(path, "rb") as f:
            digest.update(hashlib.sha256(f.read()).digest())
    return digest.hexdigest()


def train_classifier(examples: list[tuple[str, str]], cfg: DomainConfig) -> LinearClassifier:
    """Softmax regression on hashed n-grams, full-batch gradient descent with an L2 penalty."""
    labels = tuple(sorted({label for _, label in examples}))
    rows = [hashed_features(text, cfg.classifier_buckets, cfg.classifier_ngrams) for text, _ in examples]
    row_of = np.concatenate([np.full(len(idx), r, dtype=np.int64) for r, (idx, _) in enumerate(rows)])
    index = np.concatenate([idx for idx, _ in rows])
    values = np.concatenate([val for _, val in rows]).astype(np.float32)
    target = np.zeros((len(examples), len(labels)), dtype=np.float32)
    target[np.arange(len(examples)), [labels.index(label) for _, label in examples]] = 1.0
    weights = np.zeros((cfg.classifier_buckets, len(labels)), dtype=np.float32)
    bias = np.zeros(len(labels), dtype=np.float32)
    lr, n = np.float32(cfg.classifier_learning_rate), np.float32(len(examples))
    for _ in range(cfg.classifier_epochs):
        logits = _sparse_matmul(row_of, index, values, weights, len(examples)) + bias
        error = (_softmax(logits) - target) / n  # d(mean cross-entropy)/d(logits)
        grad = np.zeros_like(weights)
        np.add.at(grad, index, values[:, None] * error[row_of])
        weights -= lr * (grad + np.float32(cfg.classifier_l2) * weights)
        bias -= lr * error.sum(axis=0)
    logits = _sparse_matmul(row_of, index, values, weights, len(examples)) + bias
    accuracy = float((logits.argmax(axis=1) == target.argmax(axis=1)).mean())
    return LinearClassifier(labels, weights, bias, cfg.classifier_ngrams, accuracy)


def _sparse_matmul(row_of, index, values, weights, rows: int) -> np.ndarray:
    out = np.zeros((rows, weights.shape[1]), dtype=np.float32)
    np.add.at(out, row_of, values[:, None] * weights[index])
    return out


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
