import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from pipeline.curriculum import PhaseConfig, StageConfig
from pipeline.mixing import (
    ChatRenderer,
    EvalCut,
    EvalLimit,
    MixtureError,
    allocate,
    bin_offsets,
    bucket_caps,
    content_tokens,
    conversation,
    eval_cuts,
    eval_limits,
    expand_copies,
    group_repo_files,
    held_out_prefix,
    key_bin,
    plan_phase,
    read_sft_records,
    repo_path,
    selection_key,
    unit_hash,
)

TEMPLATE = (
    "{{ bos_token }}{% if messages and messages[0]['role'] == 'system' %}{% set system = messages[0]['content'] %}"
    "{% set messages = messages[1:] %}{% else %}{% set system = 'You are rnj.' %}{% endif %}"
    "<|start_header_id|>system<|end_header_id|>\n\n{{ system }}<|eot_id|>"
    "{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>"
    "{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


def phase(**kw):
    base = {"name": "p", "tokens": 1000, "weights": {"code": 3.0, "math": 1.0}}
    return PhaseConfig(**(base | kw))


def test_allocate_is_exact_and_deterministic():
    assert allocate(10, {"a": 1, "b": 1, "c": 1}) == {"a": 4, "b": 3, "c": 3}
    assert sum(allocate(1_000_003, {"x": 0.3, "y": 0.7, "z": 0.11}).values()) == 1_000_003


def test_plan_meets_the_budget_exactly_with_epochs_and_remainder():
    p = phase()
    plan = plan_phase(p, 1000, {"code": 400, "math": 100}, {"code": 4.0, "math": 4.0})
    code, math = plan.bucket("code"), plan.bucket("math")
    assert (code.share, code.epochs, code.remainder) == (750, 1, 350)
    assert (math.share, math.epochs, math.remainder) == (250, 2, 50)
    report = plan.report()
    assert report["code"]["achieved_weight"] == 0.75 and report["math"]["epochs"] == 2.5


def test_a_bucket_short_of_its_share_fails_naming_it():
    with pytest.raises(MixtureError, match=r"bucket 'math' cannot supply its share of 250 tokens.*at most 2 times"):
        plan_phase(phase(), 1000, {"code": 900, "math": 100}, {"code": 2.0, "math": 2.0})


def test_redistribute_gives_the_shortfall_to_the_others_by_weight():
    p = phase(weights={"code": 2.0, "math": 1.0, "science": 1.0}, on_shortfall="redistribute")
    plan = plan_phase(p, 1000, {"code": 1000, "math": 50, "science": 1000}, {k: 2.0 for k in p.weights})
    shares = {b.key: b.share for b in plan.buckets}
    assert shares == {"code": 600, "math": 100, "science": 300} and plan.redistributed
    with pytest.raises(MixtureError, match="can supply only"):
        plan_phase(p, 1000, {"code": 100, "math": 50, "science": 100}, {k: 2.0 for k in p.weights})


def test_caps_come_from_the_sources_in_a_bucket():
    p = phase(max_epochs_by_source={"small": 1.5})
    assert bucket_caps(p, {"code": {"big", "small"}, "math": {"big"}}) == {"code": 1.5, "math": 4.0}


def test_copies_hold_out_then_repeat_then_cut_the_last_document_exactly():
    p = phase(weights={"code": 1.0})
    plan = plan_phase(p, 250, {"code": 100}, {"code": 4.0})  # 2 epochs + 50 tokens
    docs = [("h", 0, 30), ("a", 30, 40), ("b", 70, 30), ("c", 100, 30)]  # (id, start, cost); eval target 30
    copies = [c for doc_id, start, cost in docs for c in expand_copies(
        doc_id, "code", start, cost, 0.5, plan=plan, train_offset={"code": 30},
        ordering="shuffle", seed=0)]
    assert [(c.doc_id, c.epoch, c.cost, c.held_out) for c in copies] == [
        ("h", 0, 30, True),
        ("a", 0, 40, False), ("a", 1, 40, False), ("a", 2, 40, False),
        ("b", 0, 30, False), ("b", 1, 30, False), ("b", 2, 10, False),
        ("c", 0, 30, False), ("c", 1, 30, False),
    ]
    assert sum(c.cost for c in copies if not c.held_out) == 250


def test_a_bucket_without_a_held_out_cut_trains_from_its_first_token():
    plan = plan_phase(phase(weights={"code": 1.0}), 100, {"code": 100}, {"code": 4.0})
    copies = expand_copies("a", "code", 0, 100, 0.5, plan=plan, train_offset={}, ordering="shuffle", seed=0)
    assert [(c.epoch, c.cost, c.held_out) for c in copies] == [(0, 100, False)]


def test_orderings():
    p = phase(weights={"code": 1.0})
    plan = plan_phase(p, 200, {"code": 100}, {"code": 4.0})
    common = {"plan": plan, "train_offset": {"code": 0}, "seed": 0}
    easy = expand_copies("a", "code", 0, 50, 0.2, ordering="easy_to_hard", **common)
    assert [c.key for c in easy] == [0.2, 0.2]
    inter = expand_copies("a", "code", 50, 50, 0.2, ordering="interleave", **common)
    assert [c.key for c in inter] == [0.375, 0.875]  # middle of its place in each epoch of the stream
    assert unit_hash(1, "x") == unit_hash(1, "x") != unit_hash(2, "x")


def test_bins_give_offsets_and_the_cut_falls_in_one_bin():
    costs = {("a", 0): 5, ("a", 3): 7, ("b", 1): 4, ("a", 9): 1}
    assert bin_offsets(costs) == {("a", 0): 0, ("a", 3): 5, ("a", 9): 12, ("b", 1): 0}
    cuts = eval_cuts(costs, {"a": EvalLimit(6, 8), "b": EvalLimit(0, 0)})
    assert list(cuts) == ["a"] and cuts["a"] == EvalCut(3, 5, 1, 3)
    assert held_out_prefix([2, 5], cuts["a"].start_room, cuts["a"].end_room) == 2  # starts before 6, ends by 8
    assert held_out_prefix([4, 3], 1, 3) == 0  # runs past the cap: held out it is not, nor anything after it
    assert held_out_prefix([1, 1, 1], 2, 3) == 2  # the third starts at the target
    assert key_bin(0.0) == 0 and key_bin(0.99999999) == 4095


def _held_out(docs: list[tuple[float, str, int]], limit: EvalLimit) -> int:
    """The split as the build makes it: per-bin sums, then the documents of the cut's bin in key order."""
    bins: dict[tuple[str, int], int] = {}
    for key, _, cost in docs:
        bins[("code", key_bin(key))] = bins.get(("code", key_bin(key)), 0) + cost
    cut = eval_cuts(bins, {"code": limit}).get("code")
    if cut is None:
        return 0
    inside = [cost for key, doc_id, cost in sorted(docs) if key_bin(key) == cut.bin]
    return cut.before + held_out_prefix(inside, cut.start_room, cut.end_room)


KEYS = st.one_of(
    st.floats(0, 0.999999),  # spread
    st.floats(0, 1 / 4096 * 0.999),  # every document in the first bin (long-biased keys before the fix)
    st.sampled_from([0.0, 0.5, 0.75]),  # heavy ties
    st.floats(0, 1).map(lambda u: min(u ** 8, 0.999999)),  # skewed towards 0
)


@settings(max_examples=300, deadline=None)
@given(docs=st.lists(st.tuples(KEYS, st.integers(1, 5000)), min_size=1, max_size=80),
       eval_sequences=st.integers(0, 40), fraction=st.sampled_from([0.0, 0.05, 0.1, 0.3]))
def test_held_out_share_respects_its_cap_whatever_the_keys(docs, eval_sequences, fraction):
    docs = [(key, f"d{i}", cost) for i, (key, cost) in enumerate(docs)]
    total = sum(cost for _, _, cost in docs)
    stage = StageConfig(name="s", kind="pretrain", seq_len=512, global_batch_tokens=512,
                        phases=(phase(tokens=512, weights={"code": 1.0}, eval_sequences=eval_sequences,
                                      max_eval_fraction=fraction),))
    limit = eval_limits(stage, stage.phases[0], {"code": total})["code"]
    assert limit.target <= limit.cap == math.floor(total * fraction)
    held = _held_out(docs, limit)
    assert held <= limit.cap  # the cap holds exactly, in tokens, whatever the keys
    ordered = [cost for *_, cost in sorted(docs)]
    prefix = [sum(ordered[:n]) for n in range(len(ordered) + 1)]
    assert held in prefix  # whole documents, a prefix of the key order (training starts at a document)
    n = prefix.index(held)
    assert n == len(ordered) or held >= limit.target or held + ordered[n] > limit.cap  # and no shorter than it may be


def test_long_biased_keys_spread_over_the_bins():
    keys = [selection_key(0, "p", f"d{i}", cost, 1.0) for i, cost in enumerate([300, 1000, 4000, 8000] * 500)]
    used = {key_bin(k) for k in keys}
    assert len(used) > 1000  # 2,000 documents; 1 - exp(-k) put ~90% of them in bin 0
    assert max(sum(key_bin(k) == b for k in keys) for b in used) < 20
    assert selection_key(0, "p", "x", 500, 0.0) == unit_hash(0, "p", "select", "x")  # no bias: uniform u


def test_length_bias_puts_long_documents_first():
    short = [selection_key(0, "p", f"s{i}", 10, 1.0) for i in range(200)]
    long = [selection_key(0, "p", f"l{i}", 10_000, 1.0) for i in range(200)]
    assert sorted(long)[100] < sorted(short)[100]
    assert all(0 <= k < 1 for k in short + long)


def test_eval_targets_and_content():
    st = StageConfig(name="s", kind="pretrain", seq_len=100, global_batch_tokens=1000,
                     phases=(phase(tokens=1000, eval_sequences=2, pack_slack=0.01),))
    p = st.phases[0]
    assert content_tokens(st, p) == 990
    limits = eval_limits(st, p, {"code": 10_000, "math": 100})  # 198 held out by weight; math capped at 10%
    assert limits == {"code": EvalLimit(149, 1000), "math": EvalLimit(10, 10)}


def test_sft_records_and_trace_forms():
    good = b'{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}'
    trace = b'{"prompt": "What does f(3) return?", "reasoning": "line 1: x = 3", "response": "9"}'
    bad = [b"{", b'{"messages": [{"role": "user", "content": "no answer"}]}', b"[1]"]
    out = list(read_sft_records([good, b"", trace, *bad]))
    assert [r for _, r in out] == [None, None, "malformed_json", "invalid_conversation", "malformed_json"]
    assert conversation(out[1][0])[1] == {"role": "assistant", "content": "line 1: x = 3\n\n9"}


def tiny_tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(["hello there, how are you? fine thanks"] * 10, trainers.BpeTrainer(
        vocab_size=300, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def test_chat_rendering_masks_assistant_tokens_only():
    tok = tiny_tokenizer()
    renderer = ChatRenderer(tok, TEMPLATE, "<|begin_of_text|>", "<|eot_id|>")
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"},
                {"role": "assistant", "content": "fine thanks"}, {"role": "user", "content": "how are you"},
                {"role": "assistant", "content": "fine"}]
    ids, mask = renderer.render(messages)
    assert len(ids) == len(mask)
    assert tok.decode(ids, skip_special_tokens=False) == renderer.text(messages)
    trained = tok.decode([i for i, m in zip(ids, mask) if m], skip_special_tokens=False)
    assert trained == "fine thanks<|eot_id|>fine<|eot_id|>"
    assert ids[0] == tok.token_to_id("<|begin_of_text|>") and ids[-1] == tok.token_to_id("<|eot_id|>")


def test_repository_documents_group_files_in_path_order():
    assert repo_path("file:///data/code/pkg/sub/mod.py", "pkg") == "pkg/sub/mod.py"
    assert repo_path("s3://b/x.py", "other") == "x.py"
    groups = group_repo_files(["pkg/b.py", "pkg/a.py", "pkg/c.py", "pkg/d.py"], [40, 30, 200, 10], limit=100)
    assert groups == [[1, 0], [2], [3]]
