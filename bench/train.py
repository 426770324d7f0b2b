"""Training-step benchmark: tokens/s, MFU, peak memory and the optimizer's share, ours vs Hugging Face.

    .venv/bin/python bench/train.py --preset tiny --seq-len 256 --micro-batch 4
    .venv/bin/python bench/train.py --preset rnj-2b --seq-len 8192 --micro-batch 1 --compile   # one H100
    .venv/bin/python bench/train.py --preset rnj-2b --seq-len 32768 --micro-batch 1 --compile --ac full

One device (a GPU when present, else the CPU), one process. Every combination of model (`ours`: model.Transformer;
`hf`: transformers' Gemma3ForCausalLM built from the same config by model.hf.config_to_hf) and optimizer
(`muon`: the trainer's Muon + AdamW table, Muon on the hidden matrices; `adamw`: AdamW on everything, fused
on GPU) runs in a fresh subprocess of this script, so that peak memory (CUDA's allocator peak; on CPU the
process's maximum resident set) and compile caches belong to that combination alone.

Times are the best of the timed steps (forward + backward and optimizer separately). A step is one micro-batch of random tokens (one document per row, so both models run plain causal attention):
forward + backward, then the optimizer step. Precision as in the trainer: float32 master weights, bf16
autocast on GPU, float32 on CPU. MFU uses the trainer's FLOP count (model/info.py: 6·N + 12·L·H·Dh·T per
token) against the device's dense bf16 peak (model/metrics.py); on CPU it is blank and TFLOP/s is shown.

The optimizer share is measured at this micro-batch (one micro-batch per step), and projected for a global
batch of `--global-batch-tokens` reached by gradient accumulation on this one device:
t_opt / (t_opt + accumulation × t_forward+backward), from the two measured times.
"""

from __future__ import annotations

import sys

if sys.path and sys.path[0].rstrip("/").endswith("bench"):
    sys.path.pop(0)  # bench/tokenize.py would shadow the standard library's tokenize module

import argparse
import contextlib
import json
import resource
import subprocess
import time

import torch

MODELS = ("ours", "hf")
OPTIMIZERS = ("muon", "adamw")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", help="model preset (model/config.py)")
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--micro-batch", type=int, default=1, help="sequences per forward/backward")
    parser.add_argument("--steps", type=int, default=5, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (compilation, allocator)")
    parser.add_argument("--models", default="ours,hf", help="comma-separated: ours, hf")
    parser.add_argument("--optimizers", default="muon,adamw", help="comma-separated: muon, adamw")
    parser.add_argument("--compile", action="store_true", help="torch.compile each block (both models)")
    parser.add_argument("--ac", default="none", choices=("none", "selective", "full"),
                        help="activation checkpointing (hf: full only, via gradient_checkpointing_enable)")
    parser.add_argument("--rounds", type=int, default=1, help="run every combination this many times, keep the best")
    parser.add_argument("--global-batch-tokens", type=int, default=1 << 20,
                        help="global batch for the projected optimizer share")
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


def build_model(kind: str, cfg, args: argparse.Namespace, device: torch.device):
    """The model on `device` with checkpointing / compilation applied, and its loss function."""
    from model.distributed import apply_activation_checkpointing, compile_blocks

    torch.manual_seed(0)
    if kind == "ours":
        from model.transformer import Transformer

        model = Transformer(cfg).to(device)
        apply_activation_checkpointing(model, args.ac)
        if args.compile:
            compile_blocks(model)

        def loss_fn(tokens):
            out = model(tokens, targets=tokens.roll(-1, 1))
            return out.loss_sum / out.num_tokens

        return model, loss_fn
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from model.hf import config_to_hf

    hf_cfg = {k: v for k, v in config_to_hf(cfg, dtype=torch.float32).items() if k not in ("architectures",
                                                                                          "model_type")}
    model = Gemma3ForCausalLM(Gemma3TextConfig(**hf_cfg, attn_implementation="sdpa")).to(device)
    model.config.use_cache = False
    if args.ac == "full":
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    elif args.ac == "selective":
        raise ValueError("transformers has no selective activation checkpointing; use --ac full or none")
    if args.compile:
        for layer in model.model.layers:
            layer.forward = torch.compile(layer.forward)

    def loss_fn(tokens):
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
    from model.info import model_info
    from model.metrics import device_peak_flops

    kind, which = args.one.split(":")
    device = torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
    cfg = model_config(args)
    result = {"model": kind, "optimizer": which, "preset": args.preset, "seq_len": args.seq_len,
              "micro_batch": args.micro_batch, "ac": args.ac, "compile": args.compile, "device": device_name(device)}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext())
    try:
        model, loss_fn = build_model(kind, cfg, args, device)
        optimizers = build_optimizer(kind, model, which, device)
        generator = torch.Generator().manual_seed(0)
        fb_times, opt_times = [], []
        for step in range(args.warmup + args.steps):
            tokens = torch.randint(0, cfg.vocab_size, (args.micro_batch, args.seq_len), generator=generator).to(device)
            sync()
            start = time.perf_counter()
            with autocast:
                loss = loss_fn(tokens)
            loss.backward()
            sync()
            middle = time.perf_counter()
            for opt in optimizers:
                opt.step()
                opt.zero_grad(set_to_none=True)
            sync()
            end = time.perf_counter()
            if step >= args.warmup:
                fb_times.append(middle - start)
                opt_times.append(end - middle)
    except torch.OutOfMemoryError:
        return {**result, "status": "out of memory"}
    # Best of the timed steps: on a shared machine the slower ones measure the neighbours, not the code.
    fb, opt = min(fb_times), min(opt_times)
    tokens = args.micro_batch * args.seq_len
    flops_per_token = model_info(cfg, seq_lens=(args.seq_len,)).flops_per_token[args.seq_len]
    peak = device_peak_flops(device)
    accumulation = max(1, args.global_batch_tokens // tokens)
    tokens_per_s = tokens / (fb + opt)
    return {
        **result, "status": "ok", "params": sum(p.numel() for p in model.parameters()),
        "step_s": fb + opt, "forward_backward_s": fb, "optimizer_s": opt, "tokens_per_s": tokens_per_s,
        "tflops": tokens_per_s * flops_per_token / 1e12,
        "mfu": None if peak is None else tokens_per_s * flops_per_token / peak,
        "optimizer_share": opt / (fb + opt),
        "optimizer_share_at_global_batch": opt / (opt + accumulation * fb),
        "global_batch_tokens": accumulation * tokens,
        "peak_memory_gib": peak_memory_gib(device), "final_loss": float(loss),
    }


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({torch.get_num_threads()} threads)"


def peak_memory_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def run_all(args: argparse.Namespace, argv: list[str]) -> list[dict]:
    """Every combination, `--rounds` times interleaved (so that a busy spell of a shared machine does not
    fall on one combination only); the fastest round of each is kept."""
    best: dict[tuple[str, str], dict] = {}
    for _ in range(args.rounds):
        for kind in args.models.split(","):
            for which in args.optimizers.split(","):
                command = [sys.executable, __file__, *argv, "--one", f"{kind}:{which}"]
                done = subprocess.run(command, check=False, capture_output=True, text=True)
                if done.returncode != 0:
                    result = {"model": kind, "optimizer": which, "status": f"failed: {done.stderr.strip()[-300:]}"}
                else:
                    result = json.loads(done.stdout.strip().splitlines()[-1])
                print(_row(result), file=sys.stderr, flush=True)
                kept = best.get((kind, which))
                if kept is None or (result.get("status") == "ok" and (
                        kept.get("status") != "ok" or result["step_s"] < kept["step_s"])):
                    best[(kind, which)] = result
    return list(best.values())


HEADER = ("| model | optimizer | tokens/s | TFLOP/s | MFU | peak GiB | step s | optimizer % of step | "
          "optimizer % at global batch |\n|---|---|---:|---:|---:|---:|---:|---:|---:|")


def _row(r: dict) -> str:
    if r.get("status") != "ok":
        return f"| {r['model']} | {r['optimizer']} | {r.get('status')} | | | | | | |"
    mfu = "" if r["mfu"] is None else f"{100 * r['mfu']:.1f}%"
    return (f"| {r['model']} | {r['optimizer']} | {r['tokens_per_s']:,.0f} | {r['tflops']:.3f} | {mfu} | "
            f"{r['peak_memory_gib']:.2f} | {r['step_s']:.3f} | {100 * r['optimizer_share']:.1f} | "
            f"{100 * r['optimizer_share_at_global_batch']:.2f} ({r['global_batch_tokens']:,} tokens) |")


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
    print(f"{args.preset}, seq_len {args.seq_len}, micro-batch {args.micro_batch}, ac {args.ac}, "
          f"compile {args.compile}, best of {args.steps} timed steps after {args.warmup} in the best of "
          f"{args.rounds} rounds; {ok.get('device', '?')}, "
          f"{ok.get('params', 0):,} parameters")
    print(HEADER)
    for r in results:
        print(_row(r))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
