"""Training-step benchmark: tokens/s, three MFU figures, peak memory and the optimizer's share, ours vs HF.

    .venv/bin/python bench/train.py --preset tiny --seq-len 256 --micro-batch 4
    .venv/bin/python bench/train.py --preset rnj-2b --seq-len 8192 --compile --packed          # one H100
    .venv/bin/python bench/train.py --preset rnj-2b --seq-len 32768 --compile --ac full --packed --models ours

One device (a GPU when present, else the CPU), one process per combination. Every combination of model
(`ours`: model.Transformer; `hf`: transformers' Gemma3ForCausalLM built from the same config by
model.hf.config_to_hf) and optimizer (`muon`: the trainer's Muon + AdamW table; `adamw`: AdamW on everything,
fused on GPU) runs in a fresh subprocess of this script, so that peak memory (CUDA's allocator peak; on CPU
the process's maximum resident set) and compile caches belong to that combination alone.

Rows: one random document per row (plain causal attention, both models), or with `--packed` several
documents per row (lengths log-uniform between 64 and seq_len, from a fixed seed) run through the
trainer's document masking (flex_attention on GPU, a dense mask on CPU); transformers has no
document-masked path on SDPA, so `--packed` is ours only. Precision as in the trainer: float32 master
weights, bf16 autocast on GPU, float32 on CPU.

What is timed: after `--warmup` untimed steps (compilation; their wall time is reported as `warmup_s`),
each timed step is one micro-batch's forward + backward, then the optimizer step, timed apart; the best
of the timed steps is kept (on a shared machine the slower ones measure the neighbours). From these:

- forward+backward MFU: micro-batch tokens / t_fb, times FLOPs per token, over the peak;
- step MFU at the global batch `--global-batch-tokens` (default 1M), reached by gradient accumulation on
  this one device: accumulation = global / micro-batch tokens, t_step = accumulation × t_fb + t_opt (the
  optimizer runs once per step, amortised over its micro-batches); tokens/s and MFU of that step;
- the optimizer's share of that step: t_opt / t_step.

FLOPs per token: 6·N plus attention counted as `--attention-flops` says — "full" (every query against all
T keys: torchtitan's and the trainer's convention), "causal" (half of that: what a causal kernel does) or
"document" (packed rows: only keys of the query's own document). Every run reports all three MFU
conventions; the table shows the chosen one. The peak is the device's dense bf16 data-sheet figure
(model/metrics.py, exact device names) unless `--peak-tflops` gives one; it is printed.
"""

from __future__ import annotations

import sys

if sys.path and sys.path[0].rstrip("/").endswith("bench"):
    sys.path.pop(0)  # bench/tokenize.py would shadow the standard library's tokenize module

import argparse
import contextlib
import json
import math
import os
import resource
import subprocess
import time

import torch

MODELS = ("ours", "hf")
OPTIMIZERS = ("muon", "adamw")
ATTENTION_COUNTS = ("full", "causal", "document")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", help="model preset (model/config.py)")
    parser.add_argument("--seq-len", type=int, default=256,
                        help="tokens per row; above the preset's context YaRN extends it (the mid-training switch)")
    parser.add_argument("--micro-batch", type=int, default=1, help="sequences per forward/backward")
    parser.add_argument("--packed", action="store_true", help="several documents per row, document-masked")
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation, allocator)")
    parser.add_argument("--models", default="ours,hf", help="comma-separated: ours, hf")
    parser.add_argument("--optimizers", default="muon,adamw", help="comma-separated: muon, adamw")
    parser.add_argument("--compile", action="store_true", help="torch.compile each block (both models)")
    parser.add_argument("--ac", default="none", choices=("none", "selective", "full"),
                        help="activation checkpointing (hf: full only, via gradient_checkpointing_enable)")
    parser.add_argument("--rounds", type=int, default=1, help="run every combination this many times, keep the best")
    parser.add_argument("--global-batch-tokens", type=int, default=1 << 20,
                        help="global batch of the full-step MFU and the optimizer share")
    parser.add_argument("--attention-flops", default="full", choices=ATTENTION_COUNTS,
                        help="how the table counts attention FLOPs (every convention is in the JSON)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's peak TFLOP/s for MFU (default: its dense bf16 data-sheet figure)")
    parser.add_argument("--vocab-size", type=int, default=None, help="override the preset's vocabulary")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)  # MODEL:OPTIMIZER, in a subprocess
    return parser.parse_args(argv)


def model_config(args: argparse.Namespace):
    from model.config import get_preset

    overrides = {"vocab_size": args.vocab_size} if args.vocab_size else {}
    cfg = get_preset(args.preset, **overrides)
    if args.seq_len > cfg.max_seq_len:  # the trainer's mid-training switch: YaRN over the pretraining context
        cfg = cfg.with_yarn(factor=args.seq_len / cfg.max_seq_len)
    return cfg


def document_lengths(rows: int, seq_len: int, packed: bool, seed: int = 0) -> list[list[int]]:
    """Each row's document lengths: one document per row, or log-uniform lengths in [64, seq_len] cut to fit."""
    if not packed:
        return [[seq_len] for _ in range(rows)]
    generator = torch.Generator().manual_seed(seed)
    low, high = math.log(min(64, seq_len)), math.log(seq_len)
    out = []
    for _ in range(rows):
        lengths, left = [], seq_len
        while left:
            draw = math.exp(low + (high - low) * torch.rand((), generator=generator).item())
            lengths.append(min(left, max(1, round(draw))))
            left -= lengths[-1]
        out.append(lengths)
    return out


def make_batch(cfg, lengths: list[list[int]], seq_len: int, generator: torch.Generator, device: torch.device):
    """tokens, doc_ids and targets (next token of the same document, -100 at each document's end)."""
    from model.transformer import IGNORE_INDEX

    tokens = torch.randint(0, cfg.vocab_size, (len(lengths), seq_len), generator=generator)
    doc_ids = torch.cat([torch.repeat_interleave(torch.arange(len(row)), torch.tensor(row))[None] for row in lengths])
    targets = tokens.roll(-1, 1)
    targets[torch.cat([doc_ids[:, 1:] != doc_ids[:, :-1], torch.ones(len(lengths), 1, dtype=torch.bool)], 1)] = \
        IGNORE_INDEX
    return tokens.to(device), doc_ids.to(device), targets.to(device)


def build_model(kind: str, cfg, args: argparse.Namespace, device: torch.device):
    """The model on `device` with checkpointing / compilation applied, and its loss function."""
    from model.distributed import apply_activation_checkpointing, compile_blocks

    torch.manual_seed(0)
    if kind == "ours":
        from model.transformer import Transformer

        with torch.device("meta"):
            model = Transformer(cfg)
        model.to_empty(device=device)
        model.init_weights()  # on the device: a CPU initialisation of 2B weights takes longer than the timing
        apply_activation_checkpointing(model, args.ac)
        if args.compile:
            compile_blocks(model)

        def loss_fn(tokens, doc_ids, targets):
            out = model(tokens, doc_ids if args.packed else None, targets=targets)
            return out.loss_sum / out.num_tokens

        return model, loss_fn
    if args.packed:
        raise ValueError("--packed runs ours only: transformers has no document-masked SDPA path")
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from model.hf import config_to_hf

    hf_cfg = {k: v for k, v in config_to_hf(cfg, dtype=torch.float32).items() if k not in ("architectures",
                                                                                          "model_type")}
    with device:
        model = Gemma3ForCausalLM(Gemma3TextConfig(**hf_cfg, attn_implementation="sdpa"))
    model.config.use_cache = False
    if args.ac == "full":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    elif args.ac == "selective":
        raise ValueError("transformers has no selective activation checkpointing; use --ac full or none")
    if args.compile:
        for layer in model.model.layers:
            layer.forward = torch.compile(layer.forward)

    def loss_fn(tokens, doc_ids, targets):
        return model(input_ids=tokens, labels=tokens).loss  # transformers shifts the labels itself

    return model, loss_fn


def build_optimizer(kind: str, model, which: str, device: torch.device) -> list[torch.optim.Optimizer]:
    from model.optim import OptimizerSettings, build_optimizers, set_learning_rate

    if which == "adamw":
        opts = [torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1,
                                  fused=device.type == "cuda")]
    elif kind == "ours":
        opts = build_optimizers(model, OptimizerSettings())
        set_learning_rate(opts, 1e-4)
    else:  # the same split by role: Muon for the blocks' 2-D matrices, AdamW for the embedding and norms
        matrices = [p for n, p in model.named_parameters() if p.ndim == 2 and "embed" not in n]
        others = [p for n, p in model.named_parameters() if not (p.ndim == 2 and "embed" not in n)]
        opts = [torch.optim.Muon(matrices, lr=1e-4, momentum=0.95, nesterov=True, adjust_lr_fn="match_rms_adamw"),
                torch.optim.AdamW(others, lr=1e-4, betas=(0.9, 0.95), weight_decay=0.0)]
    return opts


def run_one(args: argparse.Namespace) -> dict:
    """Benchmark one MODEL:OPTIMIZER combination in this process."""
    from model.metrics import device_name, device_peak_flops

    kind, which = args.one.split(":")
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    cfg = model_config(args)
    lengths = document_lengths(args.micro_batch, args.seq_len, args.packed)
    peak = device_peak_flops(device, args.peak_tflops)
    result = {"model": kind, "optimizer": which, "preset": args.preset, "seq_len": args.seq_len,
              "yarn_factor": cfg.yarn.factor if cfg.yarn else None, "micro_batch": args.micro_batch,
              "rows": "packed" if args.packed else "one document", "attention": attention_path(args, device),
              "ac": args.ac, "compile": args.compile, "device": device_name(device),
              "peak_tflops": None if peak is None else peak.flops / 1e12,
              "peak_source": None if peak is None else peak.source,
              "documents_per_row": sum(map(len, lengths)) / len(lengths)}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext())
    try:
        model, loss_fn = build_model(kind, cfg, args, device)
        optimizers = build_optimizer(kind, model, which, device)
        generator = torch.Generator().manual_seed(0)
        fb_times, opt_times = [], []
        warmup_start = time.perf_counter()
        for step in range(args.warmup + args.steps):
            batch = make_batch(cfg, lengths, args.seq_len, generator, device)
            sync()
            start = time.perf_counter()
            with autocast:
                loss = loss_fn(*batch)
            loss.backward()
            sync()
            middle = time.perf_counter()
            for opt in optimizers:
                opt.step()
                opt.zero_grad(set_to_none=True)
            sync()
            end = time.perf_counter()
            if step == args.warmup - 1:
                result["warmup_s"] = end - warmup_start
            if step >= args.warmup:
                fb_times.append(middle - start)
                opt_times.append(end - middle)
    except torch.OutOfMemoryError:
        return {**result, "status": "out of memory", "peak_memory_gib": peak_memory_gib(device)}
    return {**result, **step_figures(cfg, args, lengths, min(fb_times), min(opt_times), peak),
            "params": sum(p.numel() for p in model.parameters()), "peak_memory_gib": peak_memory_gib(device),
            "final_loss": float(loss)}


def step_figures(cfg, args: argparse.Namespace, lengths: list[list[int]], fb: float, opt: float, peak) -> dict:
    """Tokens/s and MFU of forward+backward and of a full step at the global batch, and the optimizer's share."""
    from model.info import training_flops_per_token
    from model.metrics import mfu

    tokens = args.micro_batch * args.seq_len
    accumulation = max(1, round(args.global_batch_tokens / tokens))
    step_s = accumulation * fb + opt
    fb_rate, step_rate = tokens / fb, accumulation * tokens / step_s
    flops = {count: training_flops_per_token(cfg, args.seq_len, count, lengths) for count in ATTENTION_COUNTS}
    return {
        "status": "ok", "forward_backward_s": fb, "optimizer_s": opt,
        "tokens_per_s_forward_backward": fb_rate,
        "global_batch_tokens": accumulation * tokens, "accumulation": accumulation, "step_s": step_s,
        "tokens_per_s_step": step_rate, "optimizer_share": opt / step_s,
        "flops_per_token": flops,
        "tflops_forward_backward": {c: fb_rate * f / 1e12 for c, f in flops.items()},
        "mfu_forward_backward": {c: mfu(fb_rate, f, peak) for c, f in flops.items()},
        "mfu_step": {c: mfu(step_rate, f, peak) for c, f in flops.items()},
    }


def attention_path(args: argparse.Namespace, device: torch.device) -> str:
    if not args.packed:
        return "causal SDPA"
    return "document mask, flex_attention" if device.type == "cuda" else "document mask, dense SDPA (CPU)"


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def run_subprocess(argv: list[str], kind: str, which: str, timeout: float | None = None) -> dict:
    """One combination in a fresh interpreter; its JSON result, or a status saying why there is none."""
    command = [sys.executable, __file__, *argv, "--one", f"{kind}:{which}"]
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")])))
    try:
        done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"model": kind, "optimizer": which, "status": f"timed out after {timeout:.0f} s"}
    if done.returncode != 0:
        return {"model": kind, "optimizer": which, "status": f"failed: {done.stderr.strip()[-600:]}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_all(args: argparse.Namespace, argv: list[str]) -> list[dict]:
    """Every combination, `--rounds` times interleaved (so that a busy spell of a shared machine does not
    fall on one combination only); the fastest round of each is kept."""
    best: dict[tuple[str, str], dict] = {}
    for _ in range(args.rounds):
        for kind in args.models.split(","):
            for which in args.optimizers.split(","):
                result = run_subprocess(argv, kind, which)
                print(row(result, args.attention_flops), file=sys.stderr, flush=True)
                kept = best.get((kind, which))
                if kept is None or (result.get("status") == "ok" and (
                        kept.get("status") != "ok" or result["step_s"] < kept["step_s"])):
                    best[(kind, which)] = result
    return list(best.values())


def header(attention: str) -> str:
    return (f"| model | optimizer | rows | tokens/s fwd+bwd | MFU fwd+bwd ({attention}) | tokens/s step | "
            f"MFU step ({attention}) | optimizer % of step | peak GiB | warm-up s |\n"
            "|---|---|---|---:|---:|---:|---:|---:|---:|---:|")


def row(r: dict, attention: str) -> str:
    if r.get("status") != "ok":
        return f"| {r['model']} | {r['optimizer']} | {r.get('rows', '')} | {r.get('status')} | | | | | | |"

    def pct(value):
        return "" if value is None else f"{100 * value:.1f}%"

    return (f"| {r['model']} | {r['optimizer']} | {r['rows']} | {r['tokens_per_s_forward_backward']:,.0f} | "
            f"{pct(r['mfu_forward_backward'][attention])} | {r['tokens_per_s_step']:,.0f} | "
            f"{pct(r['mfu_step'][attention])} | {100 * r['optimizer_share']:.2f} | {r['peak_memory_gib']:.2f} | "
            f"{r.get('warmup_s', 0):.0f} |")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.one:
        print(json.dumps(run_one(args)))
        return
    unknown = set(args.models.split(",")) - set(MODELS) | set(args.optimizers.split(",")) - set(OPTIMIZERS)
    if unknown:
        raise SystemExit(f"unknown models/optimizers {sorted(unknown)}; choose from {MODELS} and {OPTIMIZERS}")
    results = run_all(args, argv)
    ok = next((r for r in results if r.get("status") == "ok"), {})
    peak = "no peak known (pass --peak-tflops)" if ok.get("peak_tflops") is None else \
        f"peak {ok['peak_tflops']:,.0f} TFLOP/s ({ok['peak_source']})"
    print(f"{args.preset}, seq_len {args.seq_len}, micro-batch {args.micro_batch}, ac {args.ac}, "
          f"compile {args.compile}, best of {args.steps} timed steps after {args.warmup} in the best of "
          f"{args.rounds} rounds; {ok.get('device', '?')}, {peak}; {ok.get('params', 0):,} parameters; step "
          f"figures at a global batch of {ok.get('global_batch_tokens', 0):,} tokens; attention FLOPs counted "
          f"{args.attention_flops}")
    print(header(args.attention_flops))
    for r in results:
        print(row(r, args.attention_flops))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
