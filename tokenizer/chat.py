"""The chat template (Jinja, as transformers' `apply_chat_template` runs it) and tokenizer_config.json.

A conversation renders as Llama-3 turns, the tool calls as `<tool_call>{json}</tool_call>`:

    <|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nSYSTEM LINE<|eot_id|>
    <|start_header_id|>user<|end_header_id|>\n\nQUESTION<|eot_id|>
    <|start_header_id|>assistant<|end_header_id|>\n\nANSWER<tool_call>{"name": ..., "arguments": ...}</tool_call><|eot_id|>
    <|start_header_id|>tool<|end_header_id|>\n\nRESULT<|eot_id|>

(without the line breaks between turns). A conversation without a system message gets the build's
`system_prompt`; tools passed to `apply_chat_template(tools=...)` are listed in the system turn as JSON.
"""

from __future__ import annotations

import json

from pipeline.config import TokenizerConfig
from tokenizer.specials import special_token_layout

START_HEADER = "<|start_header_id|>"
END_HEADER = "<|end_header_id|>"
MODEL_MAX_LENGTH = 32_768
"""Rnj-1's context after mid-training."""

TOOLS_PREAMBLE = (
    "\n\nYou can call the tools below. To call one, answer with "
    '<tool_call>{"name": <tool name>, "arguments": <arguments as JSON>}</tool_call>.'
)

_TEMPLATE = """\
{{- bos_token }}
{%- if messages and messages[0]['role'] == 'system' %}
    {%- set system = messages[0]['content'] %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system = __SYSTEM__ %}
{%- endif %}
{{- '__SH__system__EH__\\n\\n' + system }}
{%- if tools %}
    {{- __TOOLS__ }}
    {%- for tool in tools %}
        {{- '\\n' + (tool | tojson) }}
    {%- endfor %}
{%- endif %}
{{- '__EOT__' }}
{%- for message in messages %}
    {{- '__SH__' + message['role'] + '__EH__\\n\\n' }}
    {%- if message['content'] is string %}
        {{- message['content'] | trim }}
    {%- endif %}
    {%- if message['tool_calls'] is defined and message['tool_calls'] %}
        {%- for call in message['tool_calls'] %}
            {%- set fn = call['function'] if call['function'] is defined else call %}
            {%- if fn['arguments'] is string %}
                {{- '<tool_call>{"name": ' + (fn['name'] | tojson) + ', "arguments": ' + fn['arguments'] + '}</tool_call>' }}
            {%- else %}
                {{- '<tool_call>{"name": ' + (fn['name'] | tojson) + ', "arguments": ' + (fn['arguments'] | tojson) + '}</tool_call>' }}
            {%- endif %}
        {%- endfor %}
    {%- endif %}
    {{- '__EOT__' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '__SH__assistant__EH__\\n\\n' }}
{%- endif %}
"""


def chat_template(cfg: TokenizerConfig) -> str:
    """The Jinja template for this build's token names and system line."""
    for name in (START_HEADER, END_HEADER):
        if name not in cfg.special_tokens:
            raise ValueError(f"the chat template needs {name} in [tokenizer] special_tokens")
    return (
        _TEMPLATE.replace("__SYSTEM__", _jinja_string(cfg.system_prompt))
        .replace("__TOOLS__", _jinja_string(TOOLS_PREAMBLE))
        .replace("__SH__", START_HEADER)
        .replace("__EH__", END_HEADER)
        .replace("__EOT__", cfg.eos_token)
    )


def _jinja_string(text: str) -> str:
    """A Jinja string literal holding `text` (Jinja unescapes the backslash escapes JSON writes)."""
    return json.dumps(text, ensure_ascii=False)


def tokenizer_config(cfg: TokenizerConfig) -> dict:
    """tokenizer_config.json for transformers' PreTrainedTokenizerFast."""
    decoder = {
        str(t.id): {"content": t.content, "lstrip": False, "normalized": False, "rstrip": False,
                    "single_word": False, "special": t.special}
        for t in special_token_layout(cfg)
    }
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": cfg.bos_token,
        "eos_token": cfg.eos_token,
        "pad_token": cfg.pad_token,
        "add_bos_token": cfg.add_bos,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": MODEL_MAX_LENGTH,
        "model_input_names": ["input_ids", "attention_mask"],
        "chat_template": chat_template(cfg),
        "added_tokens_decoder": decoder,
    }
