import json
import shutil

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer

from pipeline.config import TokenizerConfig
from pipeline.traces.format import LINE, MARKERS, RESULT, STATE, TRACE
from tests.tokenizer.conftest import TINY
from tests.tokenizer.corpus import UNUSUAL
from tokenizer import load_tokenizer, save_tokenizer, train_tokenizer
from tokenizer.encode import tokenize_batch, tokens_as_uint32
from tokenizer.files import copy_tokenizer
from tokenizer.train import new_tokenizer

CONTROL = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]


def test_special_tokens_sit_right_after_the_ordinary_vocabulary(tok):
    assert tok.vocab_size == 800 + 256
    assert (tok.bos_id, tok.pad_id, tok.eos_id) == (800, 801, 809)
    assert tok.special_ids["<|start_header_id|>"] == 806
    assert [tok.special_ids[m] for m in MARKERS] == list(range(810, 820))
    assert max(tok.tokenizer.get_vocab(with_added_tokens=False).values()) == 799


def test_pre_tokenisation_splits_digits_and_keeps_blank_runs():
    pieces = [p for p, _ in new_tokenizer(TINY).pre_tokenizer.pre_tokenize_str("x = 2024\n\n        return\tx")]
    # byte-level mapping shows a space as Ġ, a newline as Ċ, a tab as ĉ
    assert pieces == ["x", "Ġ=", "Ġ", "2", "0", "2", "4", "ĊĊ", "ĠĠĠĠĠĠĠ", "Ġreturn", "ĉx"]


def test_digits_are_single_tokens_and_indentation_compresses(tok):
    assert len(tok.encode("31415926")) == 8
    indented = "\n".join(" " * 8 + "return x" for _ in range(20))
    assert len(tok.encode(indented)) < len(indented) / 3, "8-space indentation must be few tokens"
    eight = tok.encode(" " * 8)
    assert len(eight) <= 2


def test_round_trip_on_every_domain(tok, documents):
    domains = {doc["domain"] for doc in documents}
    assert domains == {"code", "math", "science", "general", "trace", None}
    for doc in documents:
        assert tok.decode(tok.encode(doc["text"])) == doc["text"], doc["id"]


ODD = UNUSUAL + [
    "windows\r\nline\r\nends\r\n", "old mac\rends", "\t\t\tdeep\ttabs\t", "\x00\x01\x7f controls \x1b[31m",
    "e\u0301 is not NFC, \u212b neither", "<|eot_id|> in a document", "<|begin_of_text|><|end_of_text|>",
    f"{TRACE} f(1)\n{LINE} 2 x = 1\n{STATE} x=1\n{RESULT} None\n", "", " ", "\n", "👩‍👩‍👧‍👦" * 10, "a" * 5000, "1" * 3000,
]


@pytest.mark.parametrize("text", ODD)
def test_round_trip_on_odd_text(tok, text):
    assert tok.decode(tok.encode(text)) == text


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200))
def test_round_trip_on_arbitrary_text(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_document_text_never_yields_control_tokens_but_keeps_trace_markers(tok):
    ids = tok.encode("".join(CONTROL) + " <|reserved_special_token_7|>")
    assert all(i < 800 for i in ids)
    traced = tok.encode(f"{LINE} 3 y = x\n{STATE}")
    assert traced[0] == tok.special_ids[LINE] == 813 and traced[-1] == tok.special_ids[STATE] == 814


def test_nfc_mode_normalises_inside_the_tokenizer(training_texts):
    nfc = train_tokenizer(training_texts[:200], TokenizerConfig(vocab_size=600, normalization="nfc"))
    assert nfc.decode(nfc.encode("cafe\u0301", add_special_tokens=False).ids) == "caf\u00e9"
    plain = train_tokenizer(training_texts[:200], TokenizerConfig(vocab_size=600))
    assert plain.decode(plain.encode("cafe\u0301", add_special_tokens=False).ids) == "cafe\u0301"


def test_training_is_deterministic(training_texts, trained):
    again = train_tokenizer(list(reversed(training_texts)), TINY)
    assert again.to_str() == trained.to_str()


def test_before_placement_trains(training_texts):
    cfg = TokenizerConfig(vocab_size=600, special_tokens_placement="before", extra_tokens=(TRACE,))
    tokenizer = train_tokenizer(training_texts[:200], cfg)
    assert tokenizer.token_to_id("<|begin_of_text|>") == 0 and tokenizer.token_to_id("<|eot_id|>") == 9
    assert tokenizer.token_to_id(TRACE) == 10 and tokenizer.get_vocab_size() == 856


def test_too_small_a_sample_says_what_to_do():
    with pytest.raises(ValueError, match="taught only .* raise \\[tokenizer\\] sample_bytes"):
        train_tokenizer(["tiny text"], TokenizerConfig(vocab_size=600))


def test_saved_files_load_in_tokenizers_and_transformers(saved, tok):
    from transformers import PreTrainedTokenizerFast

    folder, _ = saved
    plain = Tokenizer.from_file(str(folder / "tokenizer.json"))
    text = "def add(a, b):\n    return a + b  # 12 é"
    assert plain.encode(text).ids == [tok.bos_id] + tok.encode(text)  # the saved file adds bos by default
    assert plain.encode(text, add_special_tokens=False).ids == tok.encode(text)
    hf = PreTrainedTokenizerFast.from_pretrained(str(folder))
    assert (hf.bos_token_id, hf.eos_token_id, hf.pad_token_id) == (800, 809, 801)
    assert hf(text)["input_ids"] == [800] + tok.encode(text)
    assert hf.decode(hf(text, add_special_tokens=False)["input_ids"]) == text
    assert len(hf) == tok.vocab_size


CONVERSATION = [
    {"role": "user", "content": "What is 6 x 7?"},
    {"role": "assistant", "content": "",
     "tool_calls": [{"type": "function", "function": {"name": "calc", "arguments": {"expr": "6*7"}}}]},
    {"role": "tool", "content": "42"},
    {"role": "assistant", "content": "It is 42."},
]
RENDERED = (
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are Rnj-1, a helpful assistant.<|eot_id|>"
    "<|start_header_id|>user<|end_header_id|>\n\nWhat is 6 x 7?<|eot_id|>"
    '<|start_header_id|>assistant<|end_header_id|>\n\n<tool_call>{"name": "calc", "arguments": {"expr": "6*7"}}'
    "</tool_call><|eot_id|>"
    "<|start_header_id|>tool<|end_header_id|>\n\n42<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\nIt is 42.<|eot_id|>"
    "<|start_header_id|>assistant<|end_header_id|>\n\n"
)


def test_chat_template_renders_llama3_turns_and_tool_calls(saved):
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast.from_pretrained(str(saved[0]))
    assert hf.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True) == RENDERED
    ids = hf.apply_chat_template(CONVERSATION, tokenize=True, add_generation_prompt=True)["input_ids"]
    assert ids[0] == 800 and ids.count(800) == 1 and ids.count(809) == 5 and ids.count(806) == 6
    assert hf.decode(ids) == RENDERED
    own = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    string_args = [{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": '{"x": 1}'}}]}]
    tools = [{"type": "function", "function": {"name": "calc", "parameters": {"type": "object"}}}]
    assert "system<|end_header_id|>\n\nBe brief.<|eot_id|>" in hf.apply_chat_template(own, tokenize=False)
    assert '<tool_call>{"name": "f", "arguments": {"x": 1}}</tool_call>' in hf.apply_chat_template(string_args, tokenize=False)
    with_tools = hf.apply_chat_template(own, tools=tools, tokenize=False)
    assert 'answer with <tool_call>' in with_tools and '"name": "calc"' in with_tools


def test_system_prompt_with_quotes_and_unicode_survives_the_template(trained, tmp_path):
    from transformers import PreTrainedTokenizerFast

    cfg = TokenizerConfig(vocab_size=800, system_prompt='You are "rnj" — ünïcode 🙂\\ok')
    save_tokenizer(trained, str(tmp_path), cfg)
    hf = PreTrainedTokenizerFast.from_pretrained(str(tmp_path))
    assert cfg.system_prompt + "<|eot_id|>" in hf.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False)


def test_load_checks_the_hash_and_copies_a_released_tokenizer(saved, tmp_path):
    folder, sha = saved
    with pytest.raises(ValueError, match="expected 0+: the tokenizer changed"):
        load_tokenizer(str(folder), TINY, expect_sha256="0" * 64)
    released = tmp_path / "released"
    released.mkdir()
    shutil.copy(folder / "tokenizer.json", released / "tokenizer.json")
    (released / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<|begin_of_text|>",
                                                                "eos_token": {"content": "<|end_of_text|>"}}))
    copied = tmp_path / "copy"
    assert copy_tokenizer(str(released / "tokenizer.json"), str(copied)) == sha
    loaded = load_tokenizer(str(copied), TokenizerConfig())  # roles from the copied tokenizer_config.json
    assert (loaded.bos_id, loaded.eos_id, loaded.pad_id) == (800, 801, 801)
    with pytest.raises(ValueError, match="the pad_token '<pad>' is not one of its added tokens"):
        load_tokenizer(str(released / "tokenizer.json"), _config_without_pad_in_file())


def _config_without_pad_in_file():
    return TokenizerConfig(special_tokens=TokenizerConfig().special_tokens + ("<pad>",), pad_token="<pad>")


def test_tokenize_batch_appends_tokens_and_counts(tok, documents):
    chosen = [d for d in documents if d["domain"] != "code"][:50]
    texts = [d["text"] for d in chosen]
    batch = pa.RecordBatch.from_pydict({"id": [d["id"] for d in chosen], "text": texts})
    out = tokenize_batch(tok, batch, batch_documents=7)
    assert out.schema.names == ["id", "text", "tokens", "num_tokens"]
    assert out.column("tokens").to_pylist() == [tok.encode(t) for t in texts]
    assert out.column("num_tokens").to_pylist() == [len(tok.encode(t)) for t in texts]
    again = tokenize_batch(tok, out, batch_documents=50)  # re-tokenizing replaces, never duplicates
    assert again.schema.names == out.schema.names
    table = tokens_as_uint32(pa.Table.from_batches([out]))
    assert table.schema.field("tokens").type == pa.list_(pa.uint32())
    assert table.column("tokens").to_pylist() == out.column("tokens").to_pylist()
