"""The model-based grader on a tiny random checkpoint and a tiny tokenizer made in the test."""

from __future__ import annotations

import dataclasses

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.slow  # a few seconds of torch on CPU

from model.reference import reference_scorer
from pipeline.documents import documents_table
from pipeline.grading.base import GradeContext
from pipeline.grading.config import GradeConfig, ReferenceModelConfig
from pipeline.grading.grade import analyse_batch, grade_batch
from pipeline.grading.reference import reference_fingerprint

SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
TEXTS = ["def add(a, b):\n    return a + b\n", "The cat sat on the mat.", "x", "Solve $2x + 1 = 5$ for $x$." * 20]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    from model import Transformer, get_preset, write_rnj

    root = tmp_path_factory.mktemp("reference")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(TEXTS * 5, trainer)
    tokenizer.save(str(root / "tokenizer.json"))
    torch.manual_seed(0)
    cfg = get_preset("tiny")
    write_rnj(root / "ckpt", cfg, Transformer(cfg).state_dict())
    return ReferenceModelConfig(enabled=True, checkpoint_path=str(root / "ckpt"),
                                tokenizer_path=str(root / "tokenizer.json"), max_tokens=64, batch_size=3,
                                device="cpu")


def test_losses_do_not_depend_on_batch_company(reference):
    scorer = reference_scorer(reference)
    together = scorer.losses(TEXTS)
    alone = [scorer.losses([t])[0] for t in TEXTS]
    assert together == alone  # bitwise: every pass has the same shape
    assert together[2] > 0 and all(3.0 < loss < 8.0 for loss in together)  # random weights: about ln(512)
    assert reference_scorer(reference) is scorer  # loaded once per process
    assert len(reference_fingerprint(reference)) == 64


def test_grade_batch_adds_reference_loss(reference):
    cfg = dataclasses.replace(GradeConfig(), reference_model=reference)
    docs = [{"id": str(i), "text": t, "source": "s", "lang": "python" if i == 0 else "en", "uri": f"u{i}"}
            for i, t in enumerate(TEXTS)]
    analysed = analyse_batch(documents_table(docs).to_batches()[0], cfg)
    rows = grade_batch(analysed, cfg, GradeContext(), reference_scorer(reference).losses).to_pylist()
    losses = [dict(r["grade_features"])["reference_loss"] for r in rows]
    assert losses == reference_scorer(reference).losses(TEXTS)
    plain = grade_batch(analysed, GradeConfig(), GradeContext()).to_pylist()
    assert all("reference_loss" not in dict(r["grade_features"]) for r in plain)
    assert [r["score"] for r in rows] != [r["score"] for r in plain]


def test_config_needs_paths():
    with pytest.raises(ValueError, match="needs checkpoint_path and tokenizer_path"):
        ReferenceModelConfig(enabled=True)
