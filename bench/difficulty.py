"""Does difficulty mean something? Spearman with true levels, side by side in one run, on held-out labelled sets.

    PYTHONSAFEPATH=1 python bench/difficulty.py /work/data/difficulty/labels/eval/*.jsonl [--model builtin:default]

(PYTHONSAFEPATH: bench/tokenize.py would shadow the standard library's tokenize module.)

For every (domain, source) of the labels files (JSONL: text, level, domain, source; bench/difficulty_data.py
writes them from public sets) it prints the Spearman correlation with the true level of: the learned model,
the hand graders' raw score (`[grade.difficulty]` default weights), and each single simple feature (length in
words, LaTeX command count, Python syntax-tree node count), and the margin of the model over the best single
feature. Use sets that the model was not fitted on: the shipped model's training sets are listed in its
model.json (`training.files`) and in docs/grading.md.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from pipeline.grading.base import GradeContext
from pipeline.grading.config import DifficultyConfig
from pipeline.grading.difficulty_model import load_model
from pipeline.grading.features import DENSE_FEATURES, SINGLE_FEATURES, dense_features
from pipeline.grading.fit import Example, load_labels, spearman
from pipeline.grading.graders import grader_for


def hand_scores(examples: list[Example]) -> np.ndarray:
    weights = DifficultyConfig()
    context = GradeContext(common_words=None)
    scores = []
    for e in examples:
        grader = grader_for(e.domain)
        features = grader.features(e.text, "python" if e.domain == "code" else "en", context)
        scores.append(grader.score(features, weights.weights_for(grader.name)))
    return np.asarray(scores)


def compare(model, examples: list[Example]) -> dict[str, dict]:
    table = {}
    for key in sorted({(e.domain, e.source) for e in examples}):
        members = [e for e in examples if (e.domain, e.source) == key]
        levels = [e.level for e in members]
        texts = [e.text for e in members]
        dense = dense_features(texts)
        row = {"documents": len(members)}
        row["model"] = spearman(model.predict(texts, key[0])[0], levels) if model.covers(key[0]) else float("nan")
        row["hand graders"] = spearman(hand_scores(members), levels)
        for label, feature in SINGLE_FEATURES.items():
            row[label] = spearman(dense[:, DENSE_FEATURES.index(feature)], levels)
        row["margin"] = row["model"] - max(row[label] for label in SINGLE_FEATURES)
        table[f"{key[0]}/{key[1]}"] = row
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("labels", nargs="+", help="held-out labels files (JSONL)")
    parser.add_argument("--model", default="builtin:default", help="difficulty model URI")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    model = load_model(args.model)
    examples, files = load_labels(args.labels)
    training = {f["sha256"] for f in model.training.get("files", [])}
    leaked = [f["path"] for f in files if f["sha256"] in training]
    if leaked:
        raise SystemExit(f"{leaked} were used to fit {args.model}: evaluate on held-out sets only")
    table = compare(model, examples)
    columns = ["documents", "model", "hand graders", *SINGLE_FEATURES, "margin"]
    print(f"model {model.name} v{model.version} ({args.model}, {model.fingerprint[:12]}); Spearman with the true level")
    print(f"| set | {' | '.join(columns)} |")
    print("|---|" + "---:|" * len(columns))
    for name, row in table.items():
        cells = [str(row["documents"])] + [f"{row[c]:+.3f}" if c == "margin" else f"{row[c]:.3f}" for c in columns[1:]]
        print(f"| {name} | {' | '.join(cells)} |")
    print(f"({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
