"""`rnj grade fit`: fit a difficulty model from labelled examples, with a cross-validated report.

A labels file is JSONL, one `{"text": ..., "level": NUMBER, "domain"?: ..., "source"?: ...}` per line (any
numeric scale). Levels are rank-normalised within each source (mid-rank percentiles, so every source spans
(0, 1) whatever its scale) and one ridge regression per domain is fitted on hashed n-grams and dense features
(pipeline/grading/features.py). With several sources in a domain the regression also gets a free offset per
source (dropped when scoring: only the order within a source is learned, not how sources compare, which
rank-normalised levels cannot say) and weights that give every source the same total weight (so the largest
source does not decide alone). Out-of-fold predictions of a k-fold split give the cross-validated Spearman
per domain and per source, the calibration (a centred isotonic regression of the labels on the out-of-fold
scores: monotone, strictly increasing between its knots) and the tier cut-offs (quantiles of the calibrated
out-of-fold scores, so tiers are balanced on the training data and then fixed).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import fsspec
import numpy as np

from pipeline.errors import UserError
from pipeline.grading.difficulty_model import DifficultyModel, DomainModel
from pipeline.grading.features import DENSE_FEATURES, SINGLE_FEATURES, dense_features, ngram_vectorizer


@dataclass(frozen=True)
class Example:
    text: str
    level: float
    domain: str
    source: str


@dataclass(frozen=True, kw_only=True)
class FitSettings:
    buckets: int = 2 ** 18
    """Hashed n-gram columns."""
    alpha: float = 10.0
    """Ridge penalty."""
    folds: int = 5
    """Cross-validation folds."""
    tiers: int = 5
    """Tiers (cut-offs = tiers - 1 quantiles of the calibrated out-of-fold scores)."""
    seed: int = 0
    """Seed of the fold split."""
    min_examples: int = 20
    """Fewer examples in a domain: refuse to fit it."""
    source_offsets: bool = True
    """A free offset per training source (dropped when scoring), so the model learns the order within each
    source and not the contrasts between sources that per-source rank normalisation makes meaningless."""
    balance_sources: bool = True
    """Weight examples so that every source of a domain has the same total weight."""


OFFSET_SCALE = 100.0
"""Per-source offset columns hold this value instead of 1, which divides their ridge penalty by its square:
free intercepts in effect."""


def load_labels(paths: list[str], default_domain: str | None = None) -> tuple[list[Example], list[dict]]:
    """Examples from labels files, and each file's provenance (path, sha256, lines). A bad line raises a
    UserError naming file and line."""
    examples, files = [], []
    for path in paths:
        try:
            with fsspec.open(path, "rb", compression="infer") as f:
                data = f.read()
        except FileNotFoundError:
            raise UserError(f"no labels file at {path}: give JSONL files of {{\"text\", \"level\"}} lines "
                            "(bench/difficulty_data.py or `rnj grade annotate` write them)") from None
        count = 0
        for number, line in enumerate(data.decode("utf-8").split("\n"), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                text, level = record["text"], float(record["level"])
            except (ValueError, KeyError, TypeError) as err:
                raise UserError(f"{path}:{number}: need a JSON object with 'text' and a numeric 'level' ({err})") from None
            domain = record.get("domain") or default_domain
            if not domain:
                raise UserError(f"{path}:{number}: no 'domain' in the line; add one or pass --domain")
            examples.append(Example(str(text), level, str(domain), str(record.get("source") or path)))
            count += 1
        files.append({"path": path, "sha256": hashlib.sha256(data).hexdigest(), "lines": count})
    if not examples:
        raise UserError(f"no labelled lines in {paths}: each line is {{\"text\": ..., \"level\": ...}}")
    return examples, files


def rank_normalise(levels: np.ndarray, sources: list[str]) -> np.ndarray:
    """Mid-rank percentile of each level within its source (ties share their average rank)."""
    from scipy.stats import rankdata

    out = np.zeros(len(levels), dtype=np.float64)
    by_source: dict[str, list[int]] = {}
    for i, source in enumerate(sources):
        by_source.setdefault(source, []).append(i)
    for members in by_source.values():
        index = np.asarray(members)
        out[index] = (rankdata(levels[index]) - 0.5) / len(index)
    return out


def spearman(a, b) -> float:
    from scipy.stats import spearmanr

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    return float(spearmanr(a, b).statistic)


def fit_model(examples: list[Example], files: list[dict], settings: FitSettings, name: str,
              version: str) -> DifficultyModel:
    """One DomainModel per domain among `examples` (module docstring)."""
    import sklearn

    domains = {}
    for domain in sorted({e.domain for e in examples}):
        members = [e for e in examples if e.domain == domain]
        if len(members) < settings.min_examples:
            raise UserError(f"domain {domain!r} has {len(members)} labelled examples; need at least "
                            f"{settings.min_examples} to fit and cross-validate")
        domains[domain] = _fit_and_calibrate(domain, members, settings)
    training = {
        "files": files,
        "settings": {"buckets": settings.buckets, "alpha": settings.alpha, "folds": settings.folds,
                     "tiers": settings.tiers, "seed": settings.seed, "source_offsets": settings.source_offsets,
                     "balance_sources": settings.balance_sources},
        "learner": "sklearn.linear_model.Ridge over [hashed uni+bigrams, standardised dense features]"
                   + (", per-source offsets" if settings.source_offsets else "")
                   + (", sources weighted equally" if settings.balance_sources else ""),
        "libraries": {"scikit-learn": sklearn.__version__, "numpy": np.__version__},
    }
    return DifficultyModel(name=name, version=version, buckets=settings.buckets, domains=domains, training=training)


@dataclass(frozen=True)
class _DomainData:
    """One domain's labelled examples, featurised once for every fit of the cross-validation."""

    members: list[Example]
    sources: np.ndarray
    target: np.ndarray
    dense: np.ndarray
    ngrams: object

    def fit(self, index: np.ndarray, settings: FitSettings) -> DomainModel:
        from sklearn.linear_model import Ridge

        return _fit_domain(self.dense[index], self.ngrams[index], self.target[index], self.sources[index], settings,
                           Ridge)

    def scores(self, model: DomainModel, index: np.ndarray) -> np.ndarray:
        return model.raw_scores(self.dense[index], self.ngrams[index])


def _fit_and_calibrate(domain: str, members: list[Example], settings: FitSettings) -> DomainModel:
    """The domain's final model, its calibration and tier cut-offs from k-fold out-of-fold scores, and its CV
    table (with, for several sources, each source scored by a model of the others)."""
    from sklearn.model_selection import KFold

    texts = [e.text for e in members]
    sources = np.array([e.source for e in members])
    data = _DomainData(members, sources, rank_normalise(np.array([e.level for e in members]), list(sources)),
                       dense_features(texts, domain), ngram_vectorizer(settings.buckets).transform(texts))
    out_of_fold = np.zeros(len(members))
    for train, held in KFold(n_splits=settings.folds, shuffle=True, random_state=settings.seed).split(texts):
        out_of_fold[held] = data.scores(data.fit(train, settings), held)
    transfer = {}
    if len(set(sources)) > 1:
        for source in sorted(set(sources)):
            held = np.flatnonzero(sources == source)
            scores = data.scores(data.fit(np.flatnonzero(sources != source), settings), held)
            transfer[source] = round(spearman(scores, [members[i].level for i in held]), 4)
    final = data.fit(np.arange(len(members)), settings)
    knots_x, knots_y = centred_isotonic(out_of_fold, data.target)
    tail_scale = float(out_of_fold.std()) or 1.0
    calibrated = DomainModel(domain=domain, coef=final.coef, intercept=0.0, mean=final.mean, scale=final.scale,
                             calibration_x=knots_x, calibration_y=knots_y, tail_scale=tail_scale,
                             cutoffs=()).calibrate(out_of_fold)
    cutoffs = tuple(float(q) for q in np.quantile(calibrated, [t / settings.tiers for t in range(1, settings.tiers)]))
    info = {"examples": len(members), "cv": cv_table(out_of_fold, data.target, members, data.dense, transfer)}
    return DomainModel(domain=domain, coef=final.coef, intercept=final.intercept, mean=final.mean, scale=final.scale,
                       calibration_x=knots_x, calibration_y=knots_y, tail_scale=tail_scale, cutoffs=cutoffs, info=info)


def _fit_domain(dense: np.ndarray, ngrams, target: np.ndarray, sources: np.ndarray, settings: FitSettings,
                ridge_class) -> DomainModel:
    """Ridge over [n-grams, standardised dense features (, per-source offset columns)]; the offsets' weights
    are dropped from the returned model (module docstring)."""
    from scipy import sparse

    mean = dense.mean(axis=0)
    scale = dense.std(axis=0)
    scale[scale == 0] = 1.0
    blocks = [ngrams, sparse.csr_matrix((dense - mean) / scale)]
    names, counts = np.unique(sources, return_counts=True)
    if settings.source_offsets and len(names) > 1:
        rows = np.searchsorted(names, sources)
        blocks.append(sparse.csr_matrix((np.full(len(sources), OFFSET_SCALE), (np.arange(len(sources)), rows)),
                                        shape=(len(sources), len(names))))
    weights = None
    if settings.balance_sources and len(names) > 1:
        weights = len(sources) / (len(names) * counts[np.searchsorted(names, sources)])
    ridge = ridge_class(alpha=settings.alpha).fit(sparse.hstack(blocks).tocsr(), target, sample_weight=weights)
    kept = ngrams.shape[1] + dense.shape[1]
    empty = np.zeros(0)
    return DomainModel(domain="", coef=ridge.coef_[:kept].astype(np.float32), intercept=float(ridge.intercept_),
                       mean=mean, scale=scale, calibration_x=empty, calibration_y=empty, cutoffs=())


def centred_isotonic(scores: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Knots of a centred isotonic regression of `target` on `scores`: scikit-learn's isotonic fit, each flat
    block replaced by one knot at its mean score, so the calibration is strictly increasing between knots
    (a step function would tie documents that the model tells apart)."""
    from sklearn.isotonic import IsotonicRegression

    order = np.argsort(scores, kind="stable")
    x, fitted = scores[order], IsotonicRegression(y_min=0.0, y_max=1.0).fit_transform(scores[order], target[order])
    knots_x, knots_y = [], []
    start = 0
    for i in range(1, len(x) + 1):
        if i == len(x) or fitted[i] != fitted[start]:
            knots_x.append(float(x[start:i].mean()))
            knots_y.append(float(fitted[start]))
            start = i
    if len(knots_x) == 1:  # constant labels: a flat calibration at that value
        knots_x, knots_y = [knots_x[0] - 1.0, knots_x[0] + 1.0], [knots_y[0], knots_y[0]]
    return np.asarray(knots_x), np.asarray(knots_y)


def cv_table(out_of_fold: np.ndarray, target: np.ndarray, members: list[Example], dense: np.ndarray,
             transfer: dict[str, float] | None = None) -> dict:
    """Cross-validated Spearman of the model per source and pooled, beside the single simple features; with
    `transfer`, also each source's Spearman under a model fitted on the other sources alone."""
    rows = {}
    groups = {"(all sources)": np.arange(len(members))}
    for source in sorted({e.source for e in members}):
        groups[source] = np.array([i for i, e in enumerate(members) if e.source == source])
    for label, index in groups.items():
        levels = np.array([members[i].level for i in index]) if label != "(all sources)" else target
        row = {"examples": len(index), "model": round(spearman(out_of_fold[index], levels), 4)}
        if transfer and label in transfer:
            row["model, other sources only"] = transfer[label]
        for feature_label, feature in SINGLE_FEATURES.items():
            row[feature_label] = round(spearman(dense[index, DENSE_FEATURES.index(feature)], levels), 4)
        rows[label] = row
    return rows


def evaluate(model: DifficultyModel, examples: list[Example]) -> dict:
    """Spearman with the true levels of the model, and of each single simple feature, per (domain, source)."""
    table = {}
    for key in sorted({(e.domain, e.source) for e in examples}):
        members = [e for e in examples if (e.domain, e.source) == key]
        levels = [e.level for e in members]
        row = {"examples": len(members)}
        texts = [e.text for e in members]
        if model.covers(key[0]):
            difficulty, _, _, dense = model.predict(texts, key[0])
            row["model"] = round(spearman(difficulty, levels), 4)
        else:
            dense = dense_features(texts)
        for label, feature in SINGLE_FEATURES.items():
            row[label] = round(spearman(dense[:, DENSE_FEATURES.index(feature)], levels), 4)
        table[f"{key[0]}/{key[1]}"] = row
    return table
