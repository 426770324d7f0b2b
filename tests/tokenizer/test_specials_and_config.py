import re

import pytest

from pipeline.config import ConfigError, TokenizerConfig, parse_build
from pipeline.traces.format import MARKERS
from tokenizer.sample import domain_targets, is_heldout, is_sampled, sample_key, sampling_probabilities
from tokenizer.specials import special_token_layout, total_vocab_size


def ids(cfg):
    return {t.content: t.id for t in special_token_layout(cfg)}


def test_default_layout_is_the_released_one_with_the_trace_markers_after_it():
    cfg = TokenizerConfig()
    table = ids(cfg)
    assert table["<|begin_of_text|>"] == 128000
    assert table["<|end_of_text|>"] == 128001
    assert table["<|start_header_id|>"] == 128006 and table["<|end_header_id|>"] == 128007
    assert table["<|eot_id|>"] == 128009
    assert table["<|reserved_special_token_0|>"] == 128002 and table["<|reserved_special_token_4|>"] == 128008
    assert [table[m] for m in MARKERS] == list(range(128010, 128020))
    assert table["<|reserved_special_token_5|>"] == 128020
    assert len(table) == 256 and max(table.values()) == 128255 and total_vocab_size(cfg) == 128256
    flags = {t.content: t.special for t in special_token_layout(cfg)}
    assert flags["<|trace|>"] is False and flags["<|eot_id|>"] is True


def test_without_extra_tokens_the_layout_is_llama3():
    table = ids(TokenizerConfig(extra_tokens=()))
    assert table["<|reserved_special_token_5|>"] == 128010
    assert table["<|reserved_special_token_250|>"] == 128255


def test_extra_tokens_move_no_named_id():
    plain = ids(TokenizerConfig(extra_tokens=()))
    traced = ids(TokenizerConfig(extra_tokens=("<|a|>", "<|b|>")))
    assert all(traced[name] == plain[name] for name in TokenizerConfig().special_tokens)
    assert traced["<|a|>"] == 128010 and traced["<|b|>"] == 128011
    assert len(traced) == 256 and max(traced.values()) == 128255


def test_before_placement_and_small_vocab():
    assert ids(TokenizerConfig(special_tokens_placement="before"))["<|eot_id|>"] == 9
    small = TokenizerConfig(vocab_size=4096, num_special_tokens=16, extra_tokens=())
    table = ids(small)
    assert table["<|begin_of_text|>"] == 4096 and max(table.values()) == 4111


TOML = """
[build]
name = "t"
output = "out"

[[sources]]
name = "web"
uri = "web.jsonl"
format = "jsonl"

[tokenizer]
vocab_size = 4096
sample_bytes = 2_000_000
domain_weights = { code = 2, math = 1 }
heldout_fraction = 0.1
extra_tokens = ["<|trace|>"]
path = "released/tokenizer.json"
"""


def test_tokenizer_section_parses_and_resolves_its_path():
    cfg = parse_build(TOML, "/b/build.toml").tokenizer
    assert cfg.vocab_size == 4096 and cfg.domain_weights == {"code": 2.0, "math": 1.0}
    assert cfg.extra_tokens == ("<|trace|>",) and cfg.path == "/b/released/tokenizer.json"


@pytest.mark.parametrize("old, new, message", [
    ("vocab_size = 4096", "vocab_size = 100", "vocab_size must be at least 512"),
    ("heldout_fraction = 0.1", "heldout_fraction = 1.0", "heldout_fraction must lie in [0, 1)"),
    ('extra_tokens = ["<|trace|>"]', 'extra_tokens = ["<|eot_id|>"]', "must not repeat a name"),
    ("domain_weights = { code = 2, math = 1 }", "domain_weights = { code = -1 }", "non-negative"),
    ("vocab_size = 4096", 'vocab_size = 4096\npad_token = "<pad>"', "pad_token '<pad>' is not in special_tokens"),
    ("vocab_size = 4096", "vocab_size = 4096\nnum_special_tokens = 4", "do not fit in num_special_tokens = 4"),
    ("vocab_size = 4096", 'vocab_size = 4096\nspecial_tokens_placement = "middle"', "must be one of"),
])
def test_bad_tokenizer_sections_say_what_is_wrong(old, new, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_build(TOML.replace(old, new), "/b/build.toml")


def test_sample_key_is_uniform_and_stable():
    keys = [sample_key(f"doc{i}", 0) for i in range(4000)]
    assert all(0 <= k < 1 for k in keys)
    assert sample_key("doc1", 0) == sample_key("doc1", 0) != sample_key("doc1", 1)
    assert 0.07 < sum(is_heldout(k, 0.1) for k in keys) / len(keys) < 0.13
    assert not any(is_sampled(k, 0.1, 1.0) and is_heldout(k, 0.1) for k in keys)
    assert sum(is_sampled(k, 0.1, 1.0) for k in keys) == sum(not is_heldout(k, 0.1) for k in keys)


def test_sampling_probabilities_follow_weights_and_take_small_domains_whole():
    sizes = {"code": 1_000_000, "math": 100_000, "general": 10_000, "poetry": 50_000}
    weights = {"code": 0.5, "math": 0.3, "general": 0.2, "science": 0.4}
    targets = domain_targets(sizes, weights, 200_000)
    assert set(targets) == {"code", "math", "general"}  # unweighted and absent domains are not sampled
    assert targets == pytest.approx({"code": 100_000, "math": 60_000, "general": 40_000})
    probability = sampling_probabilities(sizes, weights, 200_000)
    assert probability == pytest.approx({"code": 0.1, "math": 0.6, "general": 1.0})
