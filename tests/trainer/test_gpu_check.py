"""The MFU arithmetic (FLOP counts, peaks by exact device name) and the GPU check's tiny CPU run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from model.config import get_preset
from model.info import model_info, training_flops_per_token
from model.metrics import PeakFlops, mfu, peak_flops

REPO = Path(__file__).parents[2]


def test_attention_flops_full_causal_and_document():
    cfg = get_preset("rnj-2b")
    T = 8192
    full = training_flops_per_token(cfg, T, "full")
    assert full == model_info(cfg, seq_lens=(T,)).flops_per_token[T], "full is the trainer's (torchtitan's) count"
    per_pair = 12 * cfg.n_layers * cfg.n_heads * cfg.head_dim
    dense = full - per_pair * T
    assert training_flops_per_token(cfg, T, "causal") == dense + per_pair * T / 2
    assert training_flops_per_token(cfg, T, "document", [[T]]) == training_flops_per_token(cfg, T, "causal")
    # two rows: halves, and quarters -> (2·(T/2)² + 4·(T/4)²) / 2 query-key pairs over 2 rows of T tokens
    doc = training_flops_per_token(cfg, T, "document", [[T // 2] * 2, [T // 4] * 4])
    assert doc == pytest.approx(dense + per_pair * (2 * (T / 2) ** 2 + 4 * (T / 4) ** 2) / 2 / (2 * T))
    with pytest.raises(ValueError, match="document lengths"):
        training_flops_per_token(cfg, T, "document")
    with pytest.raises(ValueError, match="must be one of"):
        training_flops_per_token(cfg, T, "sparse")


def test_peak_flops_match_exact_device_names_only():
    assert peak_flops("NVIDIA H100 80GB HBM3").flops == 989e12
    assert peak_flops("NVIDIA H100 PCIe").flops == 756e12, "a PCIe card is not credited with the SXM peak"
    assert peak_flops("NVIDIA H100 NVL").flops == 835e12
    assert peak_flops("NVIDIA H200").flops == 989e12
    assert peak_flops("NVIDIA H100 something new") is None, "an unknown card is not guessed from its family"
    given = peak_flops("NVIDIA H100 PCIe", override_tflops=700)
    assert given == PeakFlops("NVIDIA H100 PCIe", 700e12, "given")
    assert str(given) == "700 TFLOP/s bf16 dense (NVIDIA H100 PCIe, given)"
    with pytest.raises(ValueError, match="must be positive"):
        peak_flops("x", override_tflops=0)
    assert mfu(1000.0, 2e9, PeakFlops("x", 4e12, "given")) == 0.5
    assert mfu(1000.0, 2e9, PeakFlops("x", 1e12, "given"), world_size=4) == 0.5
    assert mfu(1000.0, 2e9, None) is None


@pytest.mark.slow
def test_gpu_check_runs_end_to_end_at_tiny_shapes(tmp_path):
    out = tmp_path / "check.json"
    done = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--tiny", "--peak-tflops", "1",
                           "--global-batch-tokens", "4096", "--out", str(out)], cwd=REPO, check=False, capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1"), timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(out.read_text())
    cases = report["cases"]
    assert list(cases) == ["ours_8k_packed", "anchor_hf_8k", "ours_32k_yarn", "flex_vs_sdpa_bf16",
                           "ours_8k_one_document"]
    assert cases["flex_vs_sdpa_bf16"]["status"] == "skipped"  # CUDA only
    assert set(cases["flex_vs_sdpa_bf16"]["tests"]) == {"test_gpu_flex_and_sdpa_paths_agree_forward_and_grads",
                                                        "test_gpu_bf16_flex_and_sdpa_paths_agree_forward_and_grads"}
    for name in ("ours_8k_packed", "anchor_hf_8k", "ours_32k_yarn", "ours_8k_one_document"):
        case = cases[name]
        assert case["status"] == "ok", (name, case["status"])
        tokens = case["micro_batch"] * case["seq_len"]
        assert case["global_batch_tokens"] == 4096 == case["accumulation"] * tokens
        assert case["step_s"] == pytest.approx(case["accumulation"] * case["forward_backward_s"] + case["optimizer_s"])
        assert case["optimizer_share"] == pytest.approx(case["optimizer_s"] / case["step_s"])
        assert case["tokens_per_s_step"] == pytest.approx(4096 / case["step_s"])
        assert case["peak_tflops"] == 1.0 and case["peak_source"] == "given"
        flops = case["flops_per_token"]
        assert flops["full"] > flops["causal"] >= flops["document"]
        for count, per_token in flops.items():
            assert case["mfu_step"][count] == pytest.approx(case["tokens_per_s_step"] * per_token / 1e12)
            assert case["mfu_forward_backward"][count] == pytest.approx(
                tokens / case["forward_backward_s"] * per_token / 1e12)
        assert case["warmup_s"] > 0 and case["peak_memory_gib"] > 0
    assert cases["ours_8k_packed"]["documents_per_row"] > 1 and cases["ours_8k_packed"]["rows"] == "packed"
    assert cases["anchor_hf_8k"]["model"] == "hf" and cases["anchor_hf_8k"]["optimizer"] == "adamw"
    assert cases["ours_32k_yarn"]["yarn_factor"] == 2.0 and cases["ours_32k_yarn"]["ac"] == "full"
    assert cases["ours_8k_one_document"]["flops_per_token"]["document"] == \
        cases["ours_8k_one_document"]["flops_per_token"]["causal"]
    summary = report["summary"]
    assert summary["fits_32k"] is True
    assert set(summary["goals"]) == {"mfu_8k_one_document >= 45%", "mfu_8k_packed >= 45%",
                                     "optimizer <= 2% of a step at the global batch", "32k fits in 80 GB"}
    assert summary["global_batch_tokens"] == 4096
