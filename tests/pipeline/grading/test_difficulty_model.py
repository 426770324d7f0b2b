"""The learned difficulty model: fitting from labels, calibration, fixed tiers, saving and loading, the CLI."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from click.testing import CliRunner

from pipeline.errors import UserError
from pipeline.grading.base import GradeContext
from pipeline.grading.config import DifficultyConfig, GradeConfig
from pipeline.grading.difficulty_model import load_model
from pipeline.grading.fit import (
    FitSettings,
    centred_isotonic,
    evaluate,
    fit_model,
    load_labels,
    rank_normalise,
)
from pipeline.grading.grade import analyse_batch, grade_batch
from pipeline.mathgen import generate_problems
from rnj.grade_cmd import grade_group

SMALL = FitSettings(buckets=2 ** 12, folds=3, tiers=5)


def code_example(level: int, rng: random.Random) -> str:
    """A function whose size and nesting grow with `level` (1..5)."""
    lines = [f"def solve_{rng.randrange(1000)}(values):", "    total = 0"]
    for depth in range(level):
        lines.append("    " * (depth + 1) + f"for item_{depth} in values:")
    lines.append("    " * (level + 1) + f"total += item_{level - 1} * {rng.randrange(2, 9)}")
    lines += ["    " * (level - d) + f"if total > {rng.randrange(100)}:\n" + "    " * (level - d + 1) + "total -= 1"
              for d in range(level - 1)]
    lines.append("    return total")
    return "\n".join(lines) + "\n"


def write_labels(path, seed: int = 0, per_level: int = 12) -> list[dict]:
    """Math problems of the generator's own levels and code of growing depth, as a labels file."""
    rng = random.Random(seed)
    rows = [{"text": p.text(), "level": p.level, "domain": "math", "source": "mathgen"}
            for p in generate_problems(per_level * 5, seed=seed)]
    rows += [{"text": code_example(level, rng), "level": level, "domain": "code", "source": "generated"}
             for level in range(1, 6) for _ in range(per_level)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    write_labels(folder / "labels.jsonl")
    examples, files = load_labels([str(folder / "labels.jsonl")])
    model = fit_model(examples, files, SMALL, name="tiny", version="1")
    model.save(str(folder / "model"))
    return folder, model


def test_rank_normalisation_is_per_source():
    levels = np.array([1, 2, 3, 10, 20, 20])
    out = rank_normalise(levels, ["a", "a", "a", "b", "b", "b"])
    assert out.tolist() == pytest.approx([1 / 6, 3 / 6, 5 / 6, 1 / 6, 4 / 6, 4 / 6])


def test_centred_isotonic_is_monotone_and_keeps_order():
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    x, y = centred_isotonic(scores, np.array([0.1, 0.3, 0.2, 0.6, 0.5, 0.9]))
    assert np.all(np.diff(x) > 0) and np.all(np.diff(y) > 0)
    calibrated = np.interp(scores, x, y)
    assert np.all(np.diff(calibrated) >= 0) and calibrated[1] < calibrated[2]  # a step would tie these two


def test_fit_learns_both_domains_and_reports_cross_validation(fitted):
    _, model = fitted
    assert set(model.domains) == {"code", "math"}
    for item in model.domains.values():
        assert len(item.cutoffs) == 4 and list(item.cutoffs) == sorted(item.cutoffs)
        cv = item.info["cv"]
        assert set(cv) >= {"(all sources)"} and cv["(all sources)"]["examples"] == 60
        assert {"model", "length (words)", "LaTeX commands", "AST nodes"} <= set(cv["(all sources)"])
    assert model.domains["code"].info["cv"]["generated"]["model"] > 0.8
    assert model.domains["math"].info["cv"]["mathgen"]["model"] > 0.5


def test_source_offsets_learn_the_order_within_sources_not_between_them():
    """Source b's documents are all far longer than source a's, but its levels span the same rank-normalised
    range: without offsets the pooled fit nearly ignores length; with them its weight is the within-source slope."""
    from scipy import sparse
    from sklearn.linear_model import Ridge

    from pipeline.grading.fit import _fit_domain

    length = np.concatenate([np.arange(10.0), 100.0 + np.arange(10.0)])[:, None]
    sources = np.array(["a"] * 10 + ["b"] * 10)
    target = rank_normalise(np.tile(np.arange(10), 2), list(sources))
    no_ngrams = sparse.csr_matrix((20, 4))

    def length_weight(offsets: bool) -> float:
        settings = FitSettings(buckets=4, alpha=1e-6, source_offsets=offsets, balance_sources=False)
        model = _fit_domain(length, no_ngrams, target, sources, settings, Ridge)
        assert model.coef.shape == (5,)  # n-grams + the dense feature; the offsets are not kept
        return float(model.coef[-1] / model.scale[0])

    assert length_weight(True) == pytest.approx(0.1, rel=0.05)
    assert abs(length_weight(False)) < 0.01


def test_each_source_is_also_scored_by_a_model_of_the_other_sources(tmp_path):
    rows = write_labels(tmp_path / "labels.jsonl", per_level=8)
    code = [dict(r, source=f"author-{i % 2}") for i, r in enumerate(rows) if r["domain"] == "code"]
    (tmp_path / "code.jsonl").write_text("".join(json.dumps(r) + "\n" for r in code))
    examples, files = load_labels([str(tmp_path / "code.jsonl")])
    cv = fit_model(examples, files, SMALL, name="two", version="1").domains["code"].info["cv"]
    assert {cv[s]["model, other sources only"] > 0.8 for s in ("author-0", "author-1")} == {True}
    assert "model, other sources only" not in cv["(all sources)"]


def test_held_out_labels_rank_by_level(fitted, tmp_path):
    _, model = fitted
    write_labels(tmp_path / "held.jsonl", seed=7, per_level=6)
    held, _ = load_labels([str(tmp_path / "held.jsonl")])
    table = evaluate(model, held)
    assert table["code/generated"]["model"] > 0.8 and table["math/mathgen"]["model"] > 0.5


def test_saved_model_loads_identically_and_checks_its_fingerprint(fitted):
    folder, model = fitted
    loaded = load_model(str(folder / "model"))
    assert loaded.fingerprint and loaded.tier_count == 5
    texts = [code_example(level, random.Random(level)) for level in (1, 3, 5)]
    a, b = model.predict(texts, "code"), loaded.predict(texts, "code")
    assert np.allclose(a[0], b[0]) and a[1].tolist() == b[1].tolist()
    assert np.all(np.diff(b[0]) > 0) and (0 <= b[0]).all() and (b[0] <= 1).all()
    tampered = folder / "tampered"
    tampered.mkdir()
    meta = json.loads((folder / "model" / "model.json").read_text())
    meta["domains"]["code"]["cutoffs"] = [0.1, 0.2, 0.3, 0.4]
    (tampered / "model.json").write_text(json.dumps(meta))
    (tampered / "weights.npz").write_bytes((folder / "model" / "weights.npz").read_bytes())
    with pytest.raises(UserError, match="fingerprint"):
        load_model(str(tampered))
    with pytest.raises(UserError, match="no built-in difficulty model"):
        load_model("builtin:no-such-model")


def test_a_documents_tier_does_not_depend_on_its_batch(fitted):
    """Tier stability: the same documents graded with different company get the same difficulty and tier."""
    _, model = fitted
    rng = random.Random(3)
    mine = [code_example(level, rng) for level in (1, 2, 4, 5)]
    others = [code_example(5, rng) for _ in range(20)]
    alone = model.predict(mine, "code")
    crowded = model.predict(others + mine, "code")
    assert alone[1].tolist() == crowded[1][len(others):].tolist()
    assert alone[0].tolist() == crowded[0][len(others):].tolist()


def test_a_documents_score_is_bitwise_the_same_alone_and_in_any_batch(fitted):
    """The raw score, not only the tier: a matrix product blocked by batch size changed the last bit of some
    documents' scores between two builds."""
    _, model = fitted
    rng = random.Random(4)
    texts = [code_example(rng.randint(1, 5), rng) for _ in range(67)]
    batch = model.predict(texts, "code")[2]
    assert [model.predict([t], "code")[2][0] for t in texts] == batch.tolist()
    assert model.predict(texts[5:40], "code")[2].tolist() == batch[5:40].tolist()


def test_grade_batch_uses_the_model_for_its_domains_and_hand_graders_otherwise(fitted):
    from pipeline.documents import documents_table

    _, model = fitted
    docs = [{"id": "c", "text": code_example(3, random.Random(1)), "source": "code", "domain": "code",
             "uri": "r/f.py", "lang": "python"},
            {"id": "p", "text": "The river rises in the hills. " * 20, "source": "web", "lang": "en", "uri": "w#1"}]
    analysed = analyse_batch(documents_table(docs).to_batches()[0], GradeConfig())
    rows = {r["id"]: r for r in grade_batch(analysed, GradeConfig(), GradeContext(), model=model).to_pylist()}
    assert rows["c"]["model_tier"] is not None and 0 <= rows["c"]["model_difficulty"] <= 1
    assert "log_ast_nodes" in dict(rows["c"]["grade_features"])
    assert rows["p"]["model_tier"] is None and "fk_grade" in dict(rows["p"]["grade_features"])


def test_builtin_default_model_ships_and_grades():
    model = load_model("builtin:default")
    assert {"math", "code"} <= set(model.domains) and model.tier_count == 5
    problems = generate_problems(40, seed=1)
    difficulty, _, _, _ = model.predict([p.text() for p in problems], "math")
    from scipy.stats import spearmanr

    assert spearmanr(difficulty, [p.level for p in problems]).statistic > 0.5
    assert DifficultyConfig(model="builtin:default").model == "builtin:default"


def test_cli_fit_writes_a_loadable_model_and_names_bad_lines(tmp_path):
    write_labels(tmp_path / "labels.jsonl", per_level=6)
    write_labels(tmp_path / "held.jsonl", seed=5, per_level=4)
    result = CliRunner().invoke(grade_group, ["fit", str(tmp_path / "labels.jsonl"), "--out", str(tmp_path / "m"),
                                              "--eval", str(tmp_path / "held.jsonl"), "--folds", "3",
                                              "--buckets", "4096"])
    assert result.exit_code == 0, result.output
    assert "cross-validated Spearman" in result.output and "held-out" in result.output
    model = load_model(str(tmp_path / "m"))
    assert model.training["evaluation"]["spearman"]["code/generated"]["examples"] == 20
    assert model.training["files"][0]["lines"] == 60 and len(model.training["files"][0]["sha256"]) == 64
    (tmp_path / "bad.jsonl").write_text('{"text": "x", "level": 1, "domain": "math"}\n{"text": "y"}\n')
    with pytest.raises(UserError, match=r"bad.jsonl:2: need a JSON object"):
        load_labels([str(tmp_path / "bad.jsonl")])
