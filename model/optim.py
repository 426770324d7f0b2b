"""Optimizer groups from an explicit table: Muon for hidden matrices, AdamW for everything else.

Every parameter must match exactly one rule of the table; an unmatched or doubly matched parameter is an
error naming it, so a new weight can never silently train with the wrong optimizer.

`torch.optim.Muon` runs with `adjust_lr_fn="match_rms_adamw"` (Moonshot, "Muon is Scalable"): its update is
rescaled to 0.2·sqrt(max(rows, cols)) so that one learning rate serves both optimizers. torch applies
Muon's weight decay with the *unadjusted* rate (`p *= 1 - lr·wd`), exactly like AdamW's decoupled decay, so
a configured weight decay means the same per-step shrinkage for both optimizers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.distributed.tensor import DTensor

from model.muon_distributed import DistributedMuon


@dataclass(frozen=True, kw_only=True)
class ParamRule:
    pattern: str
    """Regular expression that must match a parameter's full name (`re.fullmatch`)."""
    optimizer: Literal["muon", "adamw"]
    lr_mult: float = 1.0
    """Multiplier on the scheduled learning rate."""
    weight_decay: float = 0.0


def default_rules(weight_decay: float) -> tuple[ParamRule, ...]:
    """The table for `model.Transformer`: attention and MLP projections to Muon; the tied embedding / LM head
    (2D, but an embedding is a lookup table, not a linear map, so Muon's orthogonalisation does not fit it)
    and every norm gain to AdamW without decay."""
    return (
        ParamRule(pattern=r"blocks\.\d+\.(attn\.(wq|wk|wv|wo)|mlp\.(w_gate|w_up|w_down))\.weight",
                  optimizer="muon", weight_decay=weight_decay),
        ParamRule(pattern=r"embed\.weight", optimizer="adamw", weight_decay=0.0),
        ParamRule(pattern=r"(blocks\.\d+\.)?([a-z_]+\.)?[a-z_]*norm\.weight", optimizer="adamw", weight_decay=0.0),
    )


def assign_rules(model: nn.Module, rules: tuple[ParamRule, ...]) -> dict[str, ParamRule]:
    """Each trainable parameter's rule; raises ValueError naming any parameter matched by none or several."""
    assigned: dict[str, ParamRule] = {}
    problems = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        matches = [rule for rule in rules if re.fullmatch(rule.pattern, name)]
        if len(matches) != 1:
            problems.append(f"{name} matches {len(matches)} rules" + (
                f" ({', '.join(r.pattern for r in matches)})" if matches else ""))
            continue
        rule = matches[0]
        if rule.optimizer == "muon" and param.ndim != 2:
            problems.append(f"{name} is {param.ndim}-D but Muon takes only 2-D matrices")
        assigned[name] = rule
    if problems:
        raise ValueError("optimizer table does not cover the model exactly once: " + "; ".join(problems))
    return assigned


@dataclass(frozen=True, kw_only=True)
class OptimizerSettings:
    weight_decay: float = 0.1
    adamw_betas: tuple[float, float] = (0.9, 0.95)
    adamw_eps: float = 1e-8
    muon_momentum: float = 0.95
    muon_ns_steps: int = 5


def build_optimizers(model: nn.Module, settings: OptimizerSettings,
                     rules: tuple[ParamRule, ...] | None = None) -> list[torch.optim.Optimizer]:
    """[Muon, AdamW] with one param group per (rule, optimizer); each group remembers its `lr_mult`.

    Learning rates start at 0; `set_learning_rate` sets them from the schedule before every step."""
    rules = rules or default_rules(settings.weight_decay)
    assigned = assign_rules(model, rules)
    groups: dict[tuple[str, int], dict] = {}
    for name, param in model.named_parameters():
        if name not in assigned:
            continue
        rule = assigned[name]
        key = (rule.optimizer, rules.index(rule))
        group = groups.setdefault(key, {"params": [], "names": [], "lr": 0.0, "lr_mult": rule.lr_mult,
                                        "weight_decay": rule.weight_decay, "rule": rule.pattern})
        group["params"].append(param)
        group["names"].append(name)
    muon_groups = [g for (opt, _), g in sorted(groups.items()) if opt == "muon"]
    adamw_groups = [g for (opt, _), g in sorted(groups.items()) if opt == "adamw"]
    optimizers: list[torch.optim.Optimizer] = []
    if muon_groups:
        # FSDP2 shards parameters as DTensors: Newton–Schulz must then see whole matrices (muon_distributed.py).
        sharded = any(isinstance(p, DTensor) for g in muon_groups for p in g["params"])
        muon = DistributedMuon if sharded else torch.optim.Muon
        optimizers.append(muon(muon_groups, lr=0.0, momentum=settings.muon_momentum, nesterov=True,
                               ns_steps=settings.muon_ns_steps, adjust_lr_fn="match_rms_adamw"))
    if adamw_groups:
        optimizers.append(torch.optim.AdamW(adamw_groups, lr=0.0, betas=settings.adamw_betas,
                                            eps=settings.adamw_eps))
    return optimizers


def set_learning_rate(optimizers: list[torch.optim.Optimizer], lr: float) -> dict[str, float]:
    """Set every group's rate to `lr × lr_mult`; returns {optimizer/rule: lr} for the metrics."""
    rates = {}
    for optimizer in optimizers:
        kind = "muon" if isinstance(optimizer, torch.optim.Muon) else type(optimizer).__name__.lower()
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_mult"]
            rates[f"{kind}/{group['rule']}"] = group["lr"]
    return rates
