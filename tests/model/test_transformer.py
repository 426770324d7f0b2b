"""The model on CPU: RoPE/YaRN against transformers, document masking, attention paths, loss, init, compile.

Tolerances: float32 throughout; paths that run the same maths through different kernels agree to 1e-5
(absolute, on logits of magnitude ~1 and on gradients)."""

from __future__ import annotations

import copy
import itertools

import pytest
import torch
import torch.nn.functional as F

from model import IGNORE_INDEX, Transformer, doc_ids_from_starts, get_preset
from model.attention_masks import build_attention_mask, document_positions, document_segments
from model.transformer import RMSNorm, rope_frequencies

ATOL = 1e-5


def _tiny(seed: int = 0, **overrides) -> Transformer:
    torch.manual_seed(seed)
    model = Transformer(get_preset("tiny", **overrides))
    with torch.no_grad():  # non-zero norm gains, so that the norm weights are exercised too
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(0.0, 0.2)
    return model


def _packed_batch(seed: int = 1):
    """Row 0 packs documents of 5, 17 and 10 tokens; row 1 is one 32-token document."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, 512, (2, 32), generator=g)
    targets = torch.randint(0, 512, (2, 32), generator=g)
    doc_ids = doc_ids_from_starts([[0, 5, 22], [0]], 32)
    return tokens, targets, doc_ids


def _grads(model: Transformer) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def _assert_grads_close(a: dict, b: dict, atol: float = ATOL) -> None:
    for name, grad in a.items():
        torch.testing.assert_close(grad, b[name], atol=atol, rtol=1e-4, msg=lambda m, name=name: f"{name}: {m}")


# -- building blocks --------------------------------------------------------------------------------------

def test_rmsnorm_float32_inside_and_unit_gain_at_init():
    norm = RMSNorm(8, eps=1e-6)
    x = torch.randn(3, 8) * 5
    expected = x / x.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
    torch.testing.assert_close(norm(x), expected)
    y = norm(x.bfloat16())
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), expected, atol=0.05, rtol=0.01)


def test_document_positions_and_segments():
    doc_ids = torch.tensor([[7, 7, 7, 3, 3, 9, 9, 9], [0, 0, 0, 0, 0, 0, 0, 0], [1, 2, 1, 1, 2, 2, 2, 1]])
    assert document_positions(doc_ids).tolist() == [[0, 1, 2, 0, 1, 0, 1, 2], list(range(8)),
                                                    [0, 0, 0, 1, 0, 1, 2, 0]]
    # Only changes between neighbours matter: a label that comes back starts a new document.
    assert document_segments(doc_ids).tolist()[2] == [0, 1, 2, 2, 3, 3, 3, 4]
    assert doc_ids_from_starts([[0, 3, 5], [0]], 8).tolist() == [[0, 0, 0, 1, 1, 2, 2, 2], [0] * 8]
    with pytest.raises(ValueError, match="must begin with 0"):
        doc_ids_from_starts([[2, 5]], 8)
    with pytest.raises(ValueError, match="rise strictly"):
        doc_ids_from_starts([[0, 5, 5]], 8)


def test_auto_takes_the_causal_path_when_every_row_is_one_document():
    assert build_attention_mask(torch.zeros(2, 16, dtype=torch.long)) == (None, None)
    positions, mask = build_attention_mask(doc_ids_from_starts([[0, 4], [0]], 16))
    assert mask.dtype == torch.bool and mask.shape == (2, 1, 16, 16)  # CPU: dense SDPA mask
    assert positions[0, 4].item() == 0
    with pytest.raises(ValueError, match="attention impl must be"):
        build_attention_mask(None, "flash")


# -- RoPE and YaRN against transformers -------------------------------------------------------------------

def _hf_rope(cfg):
    """transformers' own inverse frequencies and attention scaling for a gemma3_text config built by hand."""
    from transformers import Gemma3TextConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    from transformers.models.gemma3.modeling_gemma3 import Gemma3RotaryEmbedding

    rope = {"rope_type": "default", "rope_theta": cfg.rope_theta}
    if cfg.yarn is not None:
        rope = {"rope_type": "yarn", "rope_theta": cfg.rope_theta, "factor": cfg.yarn.factor,
                "original_max_position_embeddings": cfg.yarn.original_max_seq_len,
                "beta_fast": cfg.yarn.beta_fast, "beta_slow": cfg.yarn.beta_slow}
    hf = Gemma3TextConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads,
        head_dim=cfg.head_dim, max_position_embeddings=cfg.max_seq_len, layer_types=["full_attention"] * cfg.n_layers,
        rope_parameters={"full_attention": rope, "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}})
    if cfg.yarn is None:
        return Gemma3RotaryEmbedding.compute_default_rope_parameters(hf, layer_type="full_attention")
    return ROPE_INIT_FUNCTIONS["yarn"](hf, None, layer_type="full_attention")


@pytest.mark.parametrize("cfg", [
    get_preset("rnj-1"),
    get_preset("rnj-1").with_yarn(factor=4.0),
    get_preset("rnj-2b").with_yarn(factor=8.0, beta_fast=16.0, beta_slow=2.0),
    get_preset("tiny").with_yarn(factor=2.5),
    get_preset("tiny", head_dim=64, rope_theta=500_000.0, max_seq_len=1000).with_yarn(factor=3.0),
], ids=["rnj1-plain", "rnj1-yarn4", "rnj2b-yarn8-betas", "tiny-yarn2.5", "hd64-yarn3"])
def test_rope_frequencies_and_scaling_match_transformers(cfg):
    ours, our_scaling = rope_frequencies(cfg)
    theirs, their_scaling = _hf_rope(cfg)
    torch.testing.assert_close(ours, theirs, atol=0, rtol=1e-7)
    assert our_scaling == pytest.approx(their_scaling, rel=1e-12)


def test_yarn_follows_the_paper_at_the_ends_of_the_spectrum():
    cfg = get_preset("rnj-1")
    plain, _ = rope_frequencies(cfg)
    yarn, scaling = rope_frequencies(cfg.with_yarn(factor=4.0))
    torch.testing.assert_close(yarn[:8], plain[:8], atol=0, rtol=0)  # fast dimensions: extrapolated (kept)
    torch.testing.assert_close(yarn[-8:], plain[-8:] / 4.0)  # slow dimensions: interpolated
    assert scaling == pytest.approx(0.1 * torch.log(torch.tensor(4.0)).item() + 1.0)


def test_yarn_vllm_keys():
    base = get_preset("rnj-1").with_yarn(factor=4.0)
    vllm = get_preset("rnj-1").with_yarn(factor=4.0, attn_factor=0.9, extrapolation_factor=0.0)
    plain, _ = rope_frequencies(get_preset("rnj-1"))
    inv_freq, scaling = rope_frequencies(vllm)
    assert scaling == pytest.approx(base.yarn.attention_scaling * 0.9)  # vLLM multiplies mscale by attn_factor
    torch.testing.assert_close(inv_freq, plain / 4.0)  # extrapolation_factor 0: every dimension interpolated


# -- document masking and the attention paths -------------------------------------------------------------

def test_packed_rows_equal_separate_documents_forward_and_grads():
    model = _tiny()
    tokens, targets, doc_ids = _packed_batch()
    packed = model(tokens, doc_ids)
    loss = model(tokens, doc_ids, targets=targets)
    loss.loss_sum.backward()
    packed_grads = _grads(model)

    model.zero_grad()
    reference_sum = 0.0
    for row, bounds in ((0, (0, 5, 22, 32)), (1, (0, 32))):
        for start, end in itertools.pairwise(bounds):
            alone = model(tokens[row:row + 1, start:end])  # positions 0.., plain causal attention
            torch.testing.assert_close(packed[row:row + 1, start:end], alone, atol=ATOL, rtol=0)
            reference_sum = reference_sum + model(tokens[row:row + 1, start:end],
                                                  targets=targets[row:row + 1, start:end]).loss_sum
    reference_sum.backward()
    torch.testing.assert_close(loss.loss_sum, reference_sum, atol=1e-4, rtol=1e-6)
    assert loss.num_tokens.item() == 64
    _assert_grads_close(packed_grads, _grads(model))


def test_causal_and_dense_paths_agree_on_single_document_rows():
    model = _tiny()
    tokens, targets, _ = _packed_batch()
    one_doc = torch.zeros_like(tokens)
    causal = model(tokens, targets=targets)  # doc_ids=None: SDPA is_causal
    causal.loss_sum.backward()
    causal_grads = _grads(model)
    model.zero_grad()
    dense = model(tokens, one_doc, targets=targets, attn_impl="sdpa")  # dense mask, all ones below diagonal
    dense.loss_sum.backward()
    torch.testing.assert_close(causal.loss_sum, dense.loss_sum, atol=1e-4, rtol=1e-6)
    _assert_grads_close(causal_grads, _grads(model))
    torch.testing.assert_close(model(tokens), model(tokens, one_doc, attn_impl="sdpa"), atol=ATOL, rtol=0)


def test_flex_attention_forward_matches_dense_on_cpu():
    # torch 2.13 runs flex_attention forward on CPU (compiled: ~16 s the first time, ~2 s with inductor's
    # cache warm) but has no CPU backward, so gradients of the flex path are checked on GPU only.
    model = _tiny()
    tokens, _, doc_ids = _packed_batch()
    compiled = copy.deepcopy(model)
    compiled.compile_blocks()  # flex_attention inside a compiled block: the GPU training arrangement
    with torch.no_grad():
        dense = model(tokens, doc_ids, attn_impl="sdpa")
        flex = model(tokens, doc_ids, attn_impl="flex")
        flex_in_compiled_blocks = compiled(tokens, doc_ids, attn_impl="flex")
    torch.testing.assert_close(flex, dense, atol=ATOL, rtol=0)
    torch.testing.assert_close(flex_in_compiled_blocks, dense, atol=ATOL, rtol=0)


# -- loss -------------------------------------------------------------------------------------------------

def test_chunked_loss_equals_plain_cross_entropy_with_masks():
    model = _tiny(final_logit_softcap=3.0)
    tokens, targets, doc_ids = _packed_batch()
    loss_mask = torch.ones_like(tokens, dtype=torch.bool)
    loss_mask[0, :7] = False
    targets = targets.clone()
    targets[1, -1] = IGNORE_INDEX

    logits = model(tokens, doc_ids)
    assert logits.abs().max() <= 3.0  # softcapped
    plain_targets = targets.masked_fill(~loss_mask, IGNORE_INDEX)
    plain = F.cross_entropy(logits.flatten(0, 1), plain_targets.flatten(), ignore_index=IGNORE_INDEX,
                            reduction="sum")
    plain.backward()
    plain_grads = _grads(model)
    model.zero_grad()

    model.loss_chunk_tokens = 7  # 64 tokens → 10 chunks, each recomputed in backward
    out = model(tokens, doc_ids, targets=targets, loss_mask=loss_mask)
    out.loss_sum.backward()
    assert out.num_tokens.item() == 64 - 7 - 1
    torch.testing.assert_close(out.loss_sum, plain, atol=1e-4, rtol=1e-6)
    torch.testing.assert_close(out.mean, plain / 56)
    _assert_grads_close(plain_grads, _grads(model))


def test_bad_inputs_are_refused():
    model = _tiny()
    with pytest.raises(ValueError, match="exceeds max_seq_len 256.*with_yarn"):
        model(torch.zeros(1, 257, dtype=torch.long))
    with pytest.raises(ValueError, match="doc_ids shape"):
        model(torch.zeros(1, 8, dtype=torch.long), torch.zeros(1, 7, dtype=torch.long))


# -- initialisation, meta device, precision, speed, compile -----------------------------------------------

def test_initialisation_stds():
    torch.manual_seed(0)
    model = Transformer(get_preset("tiny", d_model=256, d_ff=1024, n_heads=8, head_dim=32))
    assert model.embed.weight.std().item() == pytest.approx(256 ** -0.5, rel=0.05)
    block = model.blocks[0]
    assert block.attn.wq.weight.std().item() == pytest.approx(256 ** -0.5, rel=0.05)
    assert block.attn.wo.weight.std().item() == pytest.approx(256 ** -0.5, rel=0.05)  # fan_in = 8·32
    assert block.mlp.w_down.weight.std().item() == pytest.approx(1024 ** -0.5, rel=0.05)
    assert all(p.abs().sum() == 0 for n, p in model.named_parameters() if "norm" in n)
    # Unit-variance logits at init: loss near ln(V) + 1/2 on random targets, plus a little for the tied
    # embedding's echo of the input token (its logit is ~sqrt(D / (2L + 1)): large only in narrow models).
    tokens = torch.randint(0, 512, (4, 64))
    with torch.no_grad():
        logits = model(tokens)
        loss = model(tokens, targets=torch.randint(0, 512, (4, 64))).mean.item()
    others = logits.scatter(-1, tokens[..., None], 0.0)
    assert others.std().item() == pytest.approx(1.0, rel=0.1)
    assert 6.2 < loss < 8.0  # ln(512) = 6.24


def test_meta_device_build_then_materialise():
    cfg = get_preset("tiny").with_yarn(factor=2.0)
    with torch.device("meta"):
        model = Transformer(cfg)
    assert model.embed.weight.is_meta
    model.to_empty(device="cpu")
    torch.manual_seed(0)
    model.init_weights()
    reference = Transformer(cfg)
    torch.testing.assert_close(model.rope_cos, reference.rope_cos, atol=0, rtol=0)
    assert set(model.state_dict()) == set(reference.state_dict())  # RoPE tables are not in the state dict
    assert "rope_cos" not in model.state_dict()
    assert torch.isfinite(model(torch.randint(0, 512, (1, 16)))).all()


def test_bf16_autocast_runs_with_float32_norms_and_logits():
    model = _tiny()
    tokens, _, doc_ids = _packed_batch()
    with torch.no_grad():
        reference = model(tokens, doc_ids)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(tokens, doc_ids)
    assert logits.dtype == torch.float32
    assert (logits - reference).abs().max().item() < 0.15


def test_tiny_training_steps_lower_the_loss():
    # Speed is a benchmark's business (bench/train.py), not a test's: a step of `tiny` takes 0.01-0.1 s here.
    model = _tiny()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tokens, targets, doc_ids = _packed_batch()
    losses = []
    for _ in range(4):
        out = model(tokens, doc_ids, targets=targets)
        (out.loss_sum / out.num_tokens).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(out.mean.item())
    assert losses[-1] < losses[0]


def test_torch_compile_of_the_blocks_on_cpu():
    # fullgraph=True: a graph break inside a block fails here. The compiled path (dense document mask, the
    # CPU training path) gives the eager loss and gradients.
    eager = _tiny()
    compiled = copy.deepcopy(eager)
    compiled.compile_blocks()
    tokens, targets, doc_ids = _packed_batch()
    expected = eager(tokens, doc_ids, targets=targets)
    expected.loss_sum.backward()
    got = compiled(tokens, doc_ids, targets=targets)
    got.loss_sum.backward()
    torch.testing.assert_close(got.loss_sum, expected.loss_sum, atol=1e-4, rtol=1e-6)
    _assert_grads_close(_grads(eager), _grads(compiled), atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: flex_attention has no CPU backward")
def test_gpu_flex_and_sdpa_paths_agree_forward_and_grads():
    # The GPU training arrangement: blocks compiled (fullgraph), the flex BlockMask built once per batch.
    # float32; tolerance 1e-3 because the Triton kernels may use TF32 for float32 dot products.
    torch.backends.cuda.matmul.allow_tf32 = False
    model = _tiny().cuda()
    compiled = copy.deepcopy(model)
    compiled.compile_blocks()
    tokens, targets, doc_ids = (t.cuda() for t in _packed_batch())
    results = {}
    for name, net, impl in (("dense", model, "sdpa"), ("flex", compiled, "flex"), ("auto", compiled, "auto")):
        net.zero_grad()
        out = net(tokens, doc_ids, targets=targets, attn_impl=impl)
        out.loss_sum.backward()
        results[name] = (out.loss_sum.detach(), _grads(net))
    for name in ("flex", "auto"):
        torch.testing.assert_close(results[name][0], results["dense"][0], atol=1e-3, rtol=1e-5)
        _assert_grads_close(results[name][1], results["dense"][1], atol=1e-3)


def _relative_error(got: dict, want: dict) -> float:
    diff = sum(float((got[n].float() - want[n].float()).pow(2).sum()) for n in want)
    return (diff / sum(float(w.float().pow(2).sum()) for w in want.values())) ** 0.5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: flex_attention has no CPU backward")
def test_gpu_bf16_flex_and_sdpa_paths_agree_forward_and_grads():
    # What the GPU trainer runs: bf16 autocast, compiled blocks, flex_attention's block mask on packed rows.
    # The two kernels round bf16 differently, so each is compared with the float32 result: flex must be as
    # close to it as dense-mask SDPA is (within a factor of 2), and the two must agree with each other.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = _tiny().cuda()
    compiled = copy.deepcopy(model)
    compiled.compile_blocks()
    g = torch.Generator().manual_seed(5)
    tokens = torch.randint(0, 512, (2, 256), generator=g).cuda()
    targets = torch.randint(0, 512, (2, 256), generator=g).cuda()
    doc_ids = doc_ids_from_starts([[0, 37, 100, 201], [0, 128]], 256, device="cuda")
    results = {}
    for name, net, impl, dtype in (("float32", model, "sdpa", None), ("dense", model, "sdpa", torch.bfloat16),
                                   ("flex", compiled, "flex", torch.bfloat16)):
        net.zero_grad()
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            out = net(tokens, doc_ids, targets=targets, attn_impl=impl)
        out.loss_sum.backward()
        results[name] = (out.mean.detach(), _grads(net))
    want_loss, want_grads = results["float32"]
    loss_error = {k: float((results[k][0] - want_loss).abs() / want_loss) for k in ("dense", "flex")}
    grad_error = {k: _relative_error(results[k][1], want_grads) for k in ("dense", "flex")}
    assert loss_error["dense"] < 1e-2 and loss_error["flex"] < 1e-2, loss_error
    assert grad_error["dense"] < 5e-2 and grad_error["flex"] < 5e-2, grad_error
    assert grad_error["flex"] <= 2 * grad_error["dense"] + 1e-3, grad_error
    assert _relative_error(results["flex"][1], results["dense"][1]) < 5e-2
