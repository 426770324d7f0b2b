import math

import pytest
import torch

from model import Transformer, get_preset
from model.checkpoint import Checkpointer
from model.optim import (
    OptimizerSettings,
    ParamRule,
    assign_rules,
    build_optimizers,
    default_rules,
    set_learning_rate,
)
from pipeline.schedule import lr_at


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return Transformer(get_preset("tiny"))


def test_every_parameter_gets_exactly_one_rule():
    model = tiny_model()
    assigned = assign_rules(model, default_rules(0.1))
    assert set(assigned) == {n for n, _ in model.named_parameters()}
    assert assigned["embed.weight"].optimizer == "adamw"
    assert assigned["blocks.0.attn.wq.weight"].optimizer == "muon"
    assert assigned["blocks.1.mlp.w_down.weight"].optimizer == "muon"
    assert assigned["blocks.0.attn.q_norm.weight"].optimizer == "adamw"
    assert assigned["norm.weight"].optimizer == "adamw"


def test_unmatched_and_doubly_matched_parameters_are_named():
    model = tiny_model()
    rules = default_rules(0.1)[:2]  # no rule for the norms
    with pytest.raises(ValueError, match=r"norm\.weight matches 0 rules"):
        assign_rules(model, rules)
    overlapping = default_rules(0.1) + (ParamRule(pattern=r"embed\..*", optimizer="adamw"),)
    with pytest.raises(ValueError, match=r"embed\.weight matches 2 rules"):
        assign_rules(model, overlapping)
    wrong = (ParamRule(pattern=r".*", optimizer="muon"),)
    with pytest.raises(ValueError, match="1-D but Muon takes only 2-D"):
        assign_rules(model, wrong)


def test_optimizers_are_torch_muon_and_adamw_and_follow_the_schedule():
    model = tiny_model()
    muon, adamw = build_optimizers(model, OptimizerSettings())
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    assert muon.defaults["adjust_lr_fn"] == "match_rms_adamw"
    rates = set_learning_rate([muon, adamw], 3e-3)
    assert set(rates.values()) == {3e-3}
    tokens = torch.randint(0, model.cfg.vocab_size, (2, 16))
    out = model(tokens, targets=tokens.roll(-1, 1))
    (out.loss_sum / out.num_tokens).backward()
    before = model.blocks[0].attn.wq.weight.detach().clone()
    muon.step()
    adamw.step()
    assert not torch.equal(before, model.blocks[0].attn.wq.weight)


@pytest.mark.parametrize("shape, start, end, frac, expected", [
    ("linear", 0.0, 2e-3, 0.5, 1e-3),
    ("constant", 2e-3, 2e-3, 0.9, 2e-3),
    ("cosine", 2e-3, 2e-5, 0.0, 2e-3),
    ("cosine", 2e-3, 2e-5, 0.5, (2e-3 + 2e-5) / 2),
    ("cosine", 2e-3, 2e-5, 1.0, 2e-5),
])
def test_lr_shapes(shape, start, end, frac, expected):
    assert math.isclose(lr_at(shape, start, end, frac), expected, rel_tol=1e-12)


def test_checkpoint_round_trip_restores_weights_momentum_and_rng(tmp_path):
    model = tiny_model()
    optimizers = build_optimizers(model, OptimizerSettings())
    set_learning_rate(optimizers, 1e-3)
    tokens = torch.randint(0, model.cfg.vocab_size, (2, 16))

    def step():
        for opt in optimizers:
            opt.zero_grad()
        out = model(tokens, targets=tokens.roll(-1, 1))
        (out.loss_sum / out.num_tokens).backward()
        for opt in optimizers:
            opt.step()
        return (out.loss_sum / out.num_tokens).item()

    step()
    ckpt = Checkpointer(tmp_path, keep=1)
    ckpt.save(1, model, optimizers, {"step": 1, "data": {"position": 7}})
    expected = [step(), torch.rand(3)]

    restored = tiny_model(seed=123)
    restored_opts = build_optimizers(restored, OptimizerSettings())
    set_learning_rate(restored_opts, 1e-3)
    state = Checkpointer(tmp_path).load(ckpt.latest(), restored, restored_opts)
    assert state == {"step": 1, "data": {"position": 7}}
    model, optimizers = restored, restored_opts
    loss, draw = step(), torch.rand(3)
    assert loss == expected[0], "weights and Muon/AdamW state restored exactly"
    assert torch.equal(draw, expected[1]), "the torch RNG continues where it was saved"


def test_half_written_checkpoints_are_ignored_and_old_ones_pruned(tmp_path):
    model = tiny_model()
    optimizers = build_optimizers(model, OptimizerSettings())
    ckpt = Checkpointer(tmp_path, keep=2)
    for step in (1, 2, 3):
        ckpt.save(step, model, optimizers, {"step": step}, keep_forever=(step == 1))
    (tmp_path / "step-000000009").mkdir()  # a crash before COMPLETE: never picked up
    assert [p.name for p in ckpt.complete()] == ["step-000000001", "step-000000002", "step-000000003"]
    assert ckpt.latest().name == "step-000000003"
    ckpt.save(4, model, optimizers, {"step": 4})
    assert [p.name for p in ckpt.complete()] == ["step-000000001", "step-000000003", "step-000000004"]
