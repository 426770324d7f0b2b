"""The learned difficulty model: one linear model per domain over hashed n-grams and dense features, a monotone
calibration onto the labelled scale, and fixed tier cut-offs. Saved as a folder, loaded by URI.

A model folder holds `model.json` (format, version, feature spec, per-domain scaler, calibration, cut-offs,
cross-validation table, the training sets' hashes and sizes, fingerprint) and `weights.npz` (per-domain
coefficients, float32). Plain JSON and numpy arrays: nothing is unpickled when a model loads.

URIs: `builtin:NAME` is a model shipped inside this package (pipeline/grading/models/NAME/); anything else is
an fsspec folder URI (local path, gs://, s3:// ...).

    score     = w · [hashed n-grams, (dense - mean) / scale] + b          (the model's raw output)
    difficulty = calibration(score) in [0, 1]                              (the rank-normalised labelled scale;
                                                                            strictly increasing: no ties)
    tier      = number of cut-offs <= difficulty                           (0 .. len(cutoffs))

`difficulty` and `tier` depend on the document alone, never on what else is in the build.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import posixpath
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.errors import UserError
from pipeline.grading.features import DENSE_FEATURES, FEATURE_SPEC_VERSION, dense_features, ngram_vectorizer

MODEL_FORMAT = "rnj-difficulty-model/1"
BUILTIN_PREFIX = "builtin:"
MODEL_FILE = "model.json"
WEIGHTS_FILE = "weights.npz"


@dataclass(frozen=True, eq=False, kw_only=True)
class DomainModel:
    """The fitted parts for one domain."""

    domain: str
    coef: np.ndarray
    """(buckets + len(DENSE_FEATURES),) float32: n-gram weights first, then dense-feature weights."""
    intercept: float
    mean: np.ndarray
    """Dense features' training means."""
    scale: np.ndarray
    """Dense features' training standard deviations (1 where constant)."""
    calibration_x: np.ndarray
    """Raw scores of the calibration knots (strictly increasing)."""
    calibration_y: np.ndarray
    """Difficulty at those knots (strictly increasing, in [0, 1]); linear in between."""
    tail_scale: float = 0.0
    """Beyond the first and last knot the calibration keeps rising, exponentially towards 0 and 1 with this
    scale (the spread of the training scores), so documents past the knots are not tied; 0: flat."""
    cutoffs: tuple[float, ...]
    """Tier boundaries on the difficulty scale (tiers - 1 increasing values)."""
    info: dict = field(default_factory=dict)
    """Training sizes, cross-validated figures: reported, not used for prediction."""

    def raw_scores(self, dense: np.ndarray, ngrams) -> np.ndarray:
        buckets = ngrams.shape[1]
        standardised = (dense - self.mean) / self.scale
        # A row-wise sum, not a BLAS matrix product: BLAS blocks its sums by the number of rows, so a document's
        # score could change in the last bit with the batch it is scored in (and its tier with it at a cut-off).
        dense_part = (standardised * self.coef[buckets:]).sum(axis=1)
        return ngrams @ self.coef[:buckets] + dense_part + self.intercept

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        x, y = self.calibration_x, self.calibration_y
        out = np.interp(raw, x, y)
        if self.tail_scale > 0:
            low, high = raw < x[0], raw > x[-1]
            out[low] = y[0] * np.exp((raw[low] - x[0]) / self.tail_scale)
            out[high] = 1.0 - (1.0 - y[-1]) * np.exp(-(raw[high] - x[-1]) / self.tail_scale)
        return np.clip(out, 0.0, 1.0)

    def tiers(self, difficulty: np.ndarray) -> np.ndarray:
        return np.searchsorted(np.asarray(self.cutoffs), difficulty, side="right").astype(np.int32)


@dataclass(frozen=True, eq=False)
class DifficultyModel:
    name: str
    version: str
    buckets: int
    domains: dict[str, DomainModel]
    training: dict = field(default_factory=dict)
    """Provenance: labelled files (sha256, lines), settings, cross-validation tables, library versions."""
    fingerprint: str = ""
    uri: str = ""

    @property
    def tier_count(self) -> int:
        counts = {len(m.cutoffs) + 1 for m in self.domains.values()}
        assert len(counts) == 1, "every domain of a model has the same number of tiers"
        return counts.pop()

    def covers(self, domain: str) -> bool:
        return domain in self.domains

    def predict(self, texts: list[str], domain: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(difficulty, tier, raw score, dense features) of texts that all belong to `domain`."""
        model = self.domains[domain]
        dense = dense_features(texts, domain)
        raw = model.raw_scores(dense, ngram_vectorizer(self.buckets).transform(texts))
        difficulty = model.calibrate(raw)
        return difficulty, model.tiers(difficulty), raw, dense

    def describe(self) -> dict:
        return {"uri": self.uri, "name": self.name, "version": self.version, "fingerprint": self.fingerprint}

    # -- saving and loading ---------------------------------------------------------------------------------

    def save(self, folder: str) -> str:
        """Write the model to `folder` (created) and return its fingerprint."""
        import fsspec

        weights = io.BytesIO()
        np.savez_compressed(weights, **{d: m.coef.astype(np.float32) for d, m in sorted(self.domains.items())})
        meta = self._metadata()
        fingerprint = _fingerprint(meta, weights.getvalue())
        meta["fingerprint"] = fingerprint
        fs, path = fsspec.core.url_to_fs(folder)
        fs.makedirs(path, exist_ok=True)
        with fs.open(posixpath.join(path, WEIGHTS_FILE), "wb") as f:
            f.write(weights.getvalue())
        with fs.open(posixpath.join(path, MODEL_FILE), "w") as f:
            f.write(json.dumps(meta, indent=1, sort_keys=True) + "\n")
        return fingerprint

    def _metadata(self) -> dict:
        return {
            "format": MODEL_FORMAT, "name": self.name, "version": self.version,
            "features": {"spec_version": FEATURE_SPEC_VERSION, "dense": list(DENSE_FEATURES), "buckets": self.buckets},
            "domains": {d: {"intercept": m.intercept, "mean": m.mean.tolist(), "scale": m.scale.tolist(),
                            "calibration_x": m.calibration_x.tolist(), "calibration_y": m.calibration_y.tolist(),
                            "tail_scale": m.tail_scale,
                            "cutoffs": list(m.cutoffs), "info": m.info}
                        for d, m in sorted(self.domains.items())},
            "training": self.training,
        }


def _fingerprint(meta: dict, weights: bytes) -> str:
    digest = hashlib.sha256(json.dumps({k: v for k, v in meta.items() if k != "fingerprint"}, sort_keys=True).encode())
    digest.update(hashlib.sha256(weights).digest())
    return digest.hexdigest()


def resolve_uri(uri: str) -> str:
    """The folder a model URI names (`builtin:NAME` -> this package's models/NAME)."""
    if uri.startswith(BUILTIN_PREFIX):
        name = uri[len(BUILTIN_PREFIX):]
        folder = Path(__file__).resolve().parent / "models" / name
        if not (folder / MODEL_FILE).is_file():
            shipped = sorted(p.name for p in (folder.parent.iterdir() if folder.parent.is_dir() else ()))
            raise UserError(f"no built-in difficulty model {name!r}; shipped: {shipped or 'none'} "
                            "(or name a folder written by `rnj grade fit`)")
        return str(folder)
    return uri


@functools.lru_cache(maxsize=4)
def load_model(uri: str) -> DifficultyModel:
    """The model at `uri`, loaded once per process (each Spark Python worker loads it on first use)."""
    import fsspec

    folder = resolve_uri(uri)
    fs, path = fsspec.core.url_to_fs(folder)
    try:
        with fs.open(posixpath.join(path, MODEL_FILE), "r") as f:
            meta = json.load(f)
        with fs.open(posixpath.join(path, WEIGHTS_FILE), "rb") as f:
            raw_weights = f.read()
    except FileNotFoundError as err:
        raise UserError(f"difficulty model {uri!r}: {err.filename or err} is missing; "
                        f"a model folder holds {MODEL_FILE} and {WEIGHTS_FILE} (written by `rnj grade fit`)") from None
    if meta.get("format") != MODEL_FORMAT:
        raise UserError(f"difficulty model {uri!r} has format {meta.get('format')!r}, this rnj reads {MODEL_FORMAT!r}")
    features = meta["features"]
    if features["spec_version"] != FEATURE_SPEC_VERSION or tuple(features["dense"]) != DENSE_FEATURES:
        raise UserError(f"difficulty model {uri!r} was fitted with feature spec {features['spec_version']}, this rnj "
                        f"computes spec {FEATURE_SPEC_VERSION}: refit it with `rnj grade fit`")
    if _fingerprint(meta, raw_weights) != meta.get("fingerprint"):
        raise UserError(f"difficulty model {uri!r}: its files do not match its fingerprint (edited or truncated); "
                        "refit or copy it again")
    with np.load(io.BytesIO(raw_weights)) as arrays:
        coefs = {name: arrays[name] for name in arrays.files}
    domains = {}
    for domain, item in meta["domains"].items():
        domains[domain] = DomainModel(
            domain=domain, coef=coefs[domain], intercept=float(item["intercept"]),
            mean=np.asarray(item["mean"]), scale=np.asarray(item["scale"]),
            calibration_x=np.asarray(item["calibration_x"]), calibration_y=np.asarray(item["calibration_y"]),
            tail_scale=float(item.get("tail_scale", 0.0)), cutoffs=tuple(item["cutoffs"]), info=item.get("info", {}),
        )
    return DifficultyModel(name=meta["name"], version=meta["version"], buckets=int(features["buckets"]),
                           domains=domains, training=meta.get("training", {}), fingerprint=meta["fingerprint"],
                           uri=uri)
