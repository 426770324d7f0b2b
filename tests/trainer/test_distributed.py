"""Distributed training on CPU: two processes on gloo at 127.0.0.1.

- data: rank r of W reads every W-th sequence of a step, the ranks together each sequence once;
- DistributedMuon equals single-process torch.optim.Muon bit for bit on the same gradients;
- FSDP2 gradients (activation checkpointing and the chunked loss on) equal one process's;
- FSDP2 with bf16 block weights keeps the RoPE tables and the residual stream in float32;
- the trainer under torchrun, DDP and FSDP2, gives one process's losses (tolerance below);
- a 2-process FSDP2 run SIGKILLed mid-way and restarted gives the uninterrupted run's losses exactly;
- a run resumed on another number of ranks (1 -> 2 -> 1, FSDP2 and DDP) keeps the data position and the
  global batch, and gives one process's losses.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from model import Transformer, get_preset
from model.data import StageData
from model.distributed import apply_activation_checkpointing, checkpointed_blocks
from model.train import main as train_main
from pipeline.config import load_build
from tests.trainer.fake_build import read_losses, write_build

ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo")
"""gloo on the loopback interface only (it would otherwise bind wherever the host name resolves)."""
MATRIX_SHAPES = [(8, 6), (5, 7), (3, 4), (1, 9), (16, 16)]
"""Even and uneven row splits over 2 ranks, and a matrix of one row (rank 1 holds none of it)."""

LATER_STEP_RTOL = 2e-3
"""Two processes sum the same gradients in another order, so float32 gradients differ in the last bits;
Newton–Schulz runs in bf16, where such a difference now and then flips a rounding, and the flips compound
over steps. Measured over 36 steps: at most 3.3e-4 relative; the first step agrees to 1e-6."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- data sharding ----------------------------------------------------------------------------------------

def test_ranks_read_every_wth_sequence_of_a_step_without_overlap_or_gap(tmp_path):
    cfg = load_build(str(write_build(tmp_path)))
    stage = cfg.stages[0]
    data = StageData(cfg, stage, verify="metadata")
    count = stage.sequences_per_step
    first = 3 * count
    phase = data.train["stable"]
    expected = {i: torch.from_numpy(phase.sequence(i).tokens.astype("int64")) for i in range(first, first + count)}
    for world in (1, 2, 4):
        seen = []
        for rank in range(world):
            batches = data.micro_batches("stable", first, count, rank, world, 1, torch.device("cpu"))
            rows = torch.cat([mb["tokens"] for mb in batches])
            mine = list(range(first + rank, first + count, world))
            assert torch.equal(rows, torch.stack([expected[i] for i in mine]))
            seen += mine
        assert sorted(seen) == list(range(first, first + count)), f"world {world}: each sequence once"
    with pytest.raises(ValueError, match="cannot be split evenly over 3 ranks"):
        data.micro_batches("stable", first, count, 0, 3, 1, torch.device("cpu"))


# -- activation checkpointing -----------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["selective", "full"])
def test_activation_checkpointing_keeps_loss_gradients_and_names(mode):
    def loss_and_grads(ac):
        torch.manual_seed(0)
        model = Transformer(get_preset("tiny", n_layers=3))
        model.loss_chunk_tokens = 16  # the chunked loss recomputes too
        apply_activation_checkpointing(model, ac)
        tokens = torch.randint(0, 512, (2, 24), generator=torch.Generator().manual_seed(1))
        doc_ids = torch.tensor([[0] * 10 + [1] * 14, [0] * 24])
        out = model(tokens, doc_ids, targets=tokens.roll(-1, 1))
        out.loss_sum.backward()
        return out.loss_sum, {n: p.grad for n, p in model.named_parameters()}

    loss, grads = loss_and_grads("none")
    loss_ac, grads_ac = loss_and_grads(mode)
    assert checkpointed_blocks(3, mode) == ([0, 2] if mode == "selective" else [0, 1, 2])
    assert torch.equal(loss, loss_ac)
    assert grads.keys() == grads_ac.keys(), "parameter names do not change"
    for name in grads:
        assert torch.equal(grads[name], grads_ac[name]), name


# -- DistributedMuon and FSDP2 gradients (two spawned processes) ------------------------------------------

def test_newton_schulz_on_a_shard_is_not_the_shard_of_newton_schulz():
    from torch.optim._muon import _zeropower_via_newtonschulz as ns

    update = torch.randn(8, 6, generator=torch.Generator().manual_seed(0))
    coefficients = (3.4445, -4.7750, 2.0315)
    whole = ns(update, coefficients, 5, 1e-7)
    assert not torch.allclose(ns(update[:4], coefficients, 5, 1e-7).float(), whole[:4].float(), atol=1e-2)


def _reference_muon(steps: int):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(shape)) for shape in MATRIX_SHAPES]
    optimizer = torch.optim.Muon(params, lr=0.02, weight_decay=0.1, adjust_lr_fn="match_rms_adamw")
    grads = []
    for _ in range(steps):
        grads.append([torch.randn(shape) for shape in MATRIX_SHAPES])
        for param, grad in zip(params, grads[-1]):
            param.grad = grad.clone()
        optimizer.step()
    buffers = [optimizer.state[p]["momentum_buffer"] for p in params]
    return [p.detach() for p in params], buffers, grads


def _muon_and_fsdp_worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      GLOO_SOCKET_IFNAME="lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        results = {"muon": _check_distributed_muon(world), "fsdp": _check_fsdp_gradients(rank, world),
                   "precision": _check_fsdp_bf16_precision(rank, world)}
        if rank == 0:
            torch.save(results, out)
    finally:
        dist.destroy_process_group()


def _check_distributed_muon(world: int) -> dict:
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    from model.muon_distributed import DistributedMuon

    mesh = init_device_mesh("cpu", (world,))
    expected, expected_buffers, grads = _reference_muon(steps=3)
    torch.manual_seed(0)
    params = [torch.nn.Parameter(distribute_tensor(torch.randn(s), mesh, [Shard(0)])) for s in MATRIX_SHAPES]
    optimizer = DistributedMuon(params, lr=0.02, weight_decay=0.1, adjust_lr_fn="match_rms_adamw")
    for step_grads in grads:
        for param, grad in zip(params, step_grads):
            param.grad = distribute_tensor(grad.clone(), mesh, [Shard(0)])
        optimizer.step()
    buffers = [optimizer.state[p]["momentum_buffer"] for p in params]
    return {
        "params_equal": [torch.equal(p.full_tensor(), e) for p, e in zip(params, expected)],
        "buffers_equal": [torch.equal(b.full_tensor(), e) for b, e in zip(buffers, expected_buffers)],
        "buffers_sharded_like_params": all(b.placements == p.placements for b, p in zip(buffers, params)),
    }


def _check_fsdp_gradients(rank: int, world: int) -> dict:
    from model.distributed import shard_model
    from model.optim import OptimizerSettings, build_optimizers

    def build():
        torch.manual_seed(0)
        model = Transformer(get_preset("tiny"))
        model.loss_chunk_tokens = 32  # exercise the chunked loss's recomputation under FSDP2
        return model

    tokens = torch.randint(0, 512, (4, 40), generator=torch.Generator().manual_seed(2))
    targets = tokens.roll(-1, 1)
    reference = build()
    reference(tokens, targets=targets).loss_sum.backward()
    model = build()
    apply_activation_checkpointing(model, "full")
    shard_model(model, torch.device("cpu"))
    mine = slice(rank * 4 // world, (rank + 1) * 4 // world)
    model(tokens[mine], targets=targets[mine]).loss_sum.mul(world).backward()  # FSDP2 averages over ranks
    worst = max(float((p.grad.full_tensor() - r.grad).abs().max() / r.grad.abs().max().clamp(min=1e-12))
                for p, r in zip(model.parameters(), reference.parameters()))
    optimizers = build_optimizers(model, OptimizerSettings())
    return {"worst_relative_grad_error": worst, "optimizer": type(optimizers[0]).__name__,
            "dtensor_params": all(type(p).__name__ == "DTensor" for p in model.parameters())}


def _check_fsdp_bf16_precision(rank: int, world: int) -> dict:
    """FSDP2 with bf16 block weights (the GPU policy) under bf16 autocast, on CPU: record the dtypes that
    reach each block and `apply_rope`, and compare the loss with one process under the same autocast."""
    from model import transformer
    from model.distributed import shard_model

    def build():
        torch.manual_seed(0)
        return Transformer(get_preset("tiny"))

    seen = {"block_in": set(), "block_out": set(), "rope_x": set(), "rope_tables": set(), "tables_exact": []}
    block_forward, rope = transformer.Block.forward, transformer.apply_rope

    def recording_block(self, x_BTD, cos, sin, mask):
        seen["block_in"].add(str(x_BTD.dtype))
        out = block_forward(self, x_BTD, cos, sin, mask)
        seen["block_out"].add(str(out.dtype))
        return out

    def recording_rope(x, cos, sin):
        seen["rope_x"].add(str(x.dtype))
        seen["rope_tables"] |= {str(cos.dtype), str(sin.dtype)}
        T = cos.shape[1]
        seen["tables_exact"].append(torch.equal(cos[0, :, 0], expected_cos[:T]))
        return rope(x, cos, sin)

    expected_cos = transformer.rope_tables(get_preset("tiny"))[0]
    tokens = torch.randint(0, 512, (2, 200), generator=torch.Generator().manual_seed(3))
    targets = tokens.roll(-1, 1)
    reference = build()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = reference(tokens, targets=targets).loss_sum
    model = build()
    shard_model(model, torch.device("cpu"), param_dtype=torch.bfloat16)
    transformer.Block.forward, transformer.apply_rope = recording_block, recording_rope
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = model(tokens, targets=targets).loss_sum  # every rank the same rows: the same loss
        got.backward()
    finally:
        transformer.Block.forward, transformer.apply_rope = block_forward, rope
    grad_dtypes = {str(p.grad.dtype) for p in model.parameters()}
    return {**{k: sorted(v) for k, v in seen.items() if k != "tables_exact"},
            "tables_exact": all(seen["tables_exact"]) and len(seen["tables_exact"]) > 0,
            "loss_relative_error": float((got.detach() - want).abs() / want.abs()),
            "grad_dtypes": sorted(grad_dtypes)}


@pytest.fixture(scope="module")
def spawned(tmp_path_factory):
    out = tmp_path_factory.mktemp("spawn") / "results.pt"
    try:
        mp.spawn(_muon_and_fsdp_worker, args=(2, free_port(), str(out)), nprocs=2)
    except Exception as first:  # noqa: BLE001 -- seen once in a full-suite run, cause unknown (a port race?)
        warnings.warn(f"two-process start failed once, retrying on a new port: {first!r}")
        mp.spawn(_muon_and_fsdp_worker, args=(2, free_port(), str(out)), nprocs=2)
    return torch.load(out)


def test_distributed_muon_equals_torch_muon_bit_for_bit(spawned):
    result = spawned["muon"]
    assert result["params_equal"] == [True] * len(MATRIX_SHAPES), "weights after 3 steps"
    assert result["buffers_equal"] == [True] * len(MATRIX_SHAPES), "momentum buffers"
    assert result["buffers_sharded_like_params"]


def test_fsdp_gradients_equal_one_process_with_checkpointing_and_chunked_loss(spawned):
    result = spawned["fsdp"]
    assert result["dtensor_params"] and result["optimizer"] == "DistributedMuon"
    assert result["worst_relative_grad_error"] < 1e-5


def test_fsdp_bf16_keeps_rope_tables_and_residual_stream_in_float32(spawned):
    result = spawned["precision"]
    assert result["block_in"] == ["torch.float32"] and result["block_out"] == ["torch.float32"], \
        "the residual stream enters and leaves every block in float32 (the embedding is gathered in float32)"
    assert result["rope_tables"] == ["torch.float32"] and result["tables_exact"], \
        "apply_rope gets the model's float32 cos/sin tables, not a bf16 copy"
    assert result["rope_x"] == ["torch.bfloat16"], "queries and keys are bf16 (autocast matmuls)"
    assert result["grad_dtypes"] == ["torch.float32"], "gradients reduce into float32 shards"
    # Autocast rounds the matrices to bf16 as FSDP2's gather does, and the norm gains start at 0 (exact in
    # bf16), so the loss is one process's to the bit here (bf16 RoPE and residual gave 1e-4 relative).
    assert result["loss_relative_error"] < 1e-6, "the same loss as one process under bf16 autocast"


# -- the trainer under torchrun ---------------------------------------------------------------------------

def _build(folder: Path, parallel: str, activation_checkpointing: str = "none") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    config = write_build(folder, stable_tokens=8192, checkpoint_every=4)
    text = config.read_text().replace(
        "[train]\n", f'[train]\nparallel = "{parallel}"\nactivation_checkpointing = "{activation_checkpointing}"\n')
    config.write_text(text)
    return config


def _torchrun(config: Path, nproc: int = 2, *extra: str) -> subprocess.Popen:
    """The pretrain stage under torchrun (nproc ranks), or as one plain process for nproc = 1."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
                "--master-addr", "127.0.0.1", "--master-port", str(free_port())] if nproc > 1 else [sys.executable]
    command = [*launcher, "-m", "model.train", str(config), "--stage", "pretrain", *extra]
    log = (config.parent / "torchrun.log").open("ab")  # a file, not a pipe: nothing blocks on a full pipe
    return subprocess.Popen(command, env=ENV, cwd=Path(__file__).parents[2], stdout=log, stderr=log,
                            start_new_session=True)


def _kill_tree(pid: int) -> None:
    """SIGKILL torchrun and its workers, as a lost node would. torchrun starts each worker in a session of
    its own, so killing torchrun's process group alone would leave the workers training on."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, queue = [], [pid]
    while queue:
        tree.append(queue.pop())
        queue += children.get(tree[-1], [])
    for member in reversed(tree):  # workers first, so torchrun cannot restart them
        with contextlib.suppress(ProcessLookupError):
            os.kill(member, signal.SIGKILL)


def _finish(process: subprocess.Popen) -> None:
    config = Path(process.args[process.args.index("model.train") + 1])
    try:
        process.wait(timeout=300)
    except subprocess.TimeoutExpired:  # a hung rank: take the whole tree down, or it outlives the test run
        _kill_tree(process.pid)
        process.wait()
        pytest.fail(f"torchrun ran over 300 s; its log ends:\n{config.with_name('torchrun.log').read_text()[-4000:]}")
    assert process.returncode == 0, config.with_name("torchrun.log").read_text()[-4000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The pretrain stage (20 steps) in one process, and under torchrun with DDP and with FSDP2."""
    root = tmp_path_factory.mktemp("runs")
    train_main([str(_build(root / "single", "ddp")), "--stage", "pretrain"])
    ddp = _torchrun(_build(root / "ddp", "ddp"))
    _finish(ddp)
    fsdp = _torchrun(_build(root / "fsdp", "fsdp", activation_checkpointing="full"))
    _finish(fsdp)
    return {name: root / name / "out" / "train" / "metrics.jsonl" for name in ("single", "ddp", "fsdp")}


def _assert_same_losses(metrics: Path, expected_metrics: Path) -> None:
    got, expected = read_losses(metrics), read_losses(expected_metrics)
    assert [(s, p) for s, p, _ in got] == [(s, p) for s, p, _ in expected] and len(got) == 20
    assert got[0][2] == pytest.approx(expected[0][2], rel=1e-6)
    for (step, _, loss), (_, _, want) in zip(got, expected):
        assert loss == pytest.approx(want, rel=LATER_STEP_RTOL), f"step {step}"
    norms = [json.loads(line)["grad_norm"] for line in metrics.read_text().splitlines()]
    want_norms = [json.loads(line)["grad_norm"] for line in expected_metrics.read_text().splitlines()]
    assert norms[0] == pytest.approx(want_norms[0], rel=1e-5), "gradients are global sums, not rank means"


@pytest.mark.slow
def test_ddp_gives_the_losses_of_one_process(runs):
    _assert_same_losses(runs["ddp"], runs["single"])


@pytest.mark.slow
def test_fsdp_gives_the_losses_of_one_process(runs):
    _assert_same_losses(runs["fsdp"], runs["single"])
    records = [json.loads(line) for line in runs["fsdp"].read_text().splitlines()]
    seen = [i for r in records if r["phase"] == "stable" for i in range(*r["sequences"])]
    assert sorted(seen) == list(range(128)), "every sequence of the phase exactly once"


@pytest.mark.slow
def test_killed_fsdp_run_resumes_with_identical_losses(runs, tmp_path):
    config = _build(tmp_path, "fsdp", activation_checkpointing="full")
    metrics = tmp_path / "out" / "train" / "metrics.jsonl"
    victim = _torchrun(config)
    deadline = time.monotonic() + 120
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 6):
        assert victim.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    _kill_tree(victim.pid)
    victim.wait()
    assert len(metrics.read_text().splitlines()) < 20, "killed mid-way, not at the end"
    _finish(_torchrun(config))
    assert "resumed pretrain at step" in (tmp_path / "torchrun.log").read_text()
    assert read_losses(metrics) == read_losses(runs["fsdp"]), "bit-identical to the uninterrupted 2-process run"


@pytest.mark.slow
def test_resume_on_another_world_size_keeps_the_data_position_and_the_global_batch(runs, tmp_path):
    """One run, 4 steps at a time, alternating 1 and 2 processes (FSDP2, then DDP) from the same checkpoints."""
    config = _build(tmp_path, "fsdp")
    segments = [(1, "fsdp"), (2, "fsdp"), (1, "fsdp"), (2, "ddp"), (1, "ddp")]
    for nproc, parallel in segments:
        text = config.read_text()
        config.write_text(text.replace('parallel = "fsdp"', f'parallel = "{parallel}"').replace(
            'parallel = "ddp"', f'parallel = "{parallel}"'))
        _finish(_torchrun(config, nproc, "--max-steps", "4"))
    log = (tmp_path / "torchrun.log").read_text()
    for step, saved, now in ((4, 1, 2), (8, 2, 1), (12, 1, 2), (16, 2, 1)):
        assert (f"resumed pretrain at step {step} from {tmp_path}/out/train/checkpoints/step-{step:09d} (written by "
                f"{saved} ranks, resharded onto {now}; the global batch stays 8 sequences)") in log
    assert "1 rank(s) on cpu; 4 micro-batch(es) of 2 per rank" in log
    assert "2 rank(s) on cpu; 2 micro-batch(es) of 2 per rank" in log, "accumulation absorbs the world size"
    metrics = tmp_path / "out" / "train" / "metrics.jsonl"
    _assert_same_losses(metrics, runs["single"])
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    expected = [json.loads(line) for line in runs["single"].read_text().splitlines()]
    assert [(r["sequences"], r["loss_tokens"]) for r in records] == \
        [(r["sequences"], r["loss_tokens"]) for r in expected], "the same sequences and tokens in every step"
    for phase, count in (("stable", 128), ("decay", 32)):
        seen = [i for r in records if r["phase"] == phase for i in range(*r["sequences"])]
        assert sorted(seen) == list(range(count)), f"every {phase} sequence exactly once across the switches"
