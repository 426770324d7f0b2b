"""The Rnj-1 model: a Gemma-3-style decoder with global attention in every layer and YaRN.

    from model import ModelConfig, Transformer, get_preset
    model = Transformer(get_preset("tiny"))
    logits = model(tokens)                                     # (B, T, V)
    out = model(tokens, doc_ids, targets=targets)              # LossOutput(loss_sum, num_tokens)

`model.config` holds the config and presets, `model.transformer` the model, `model.attention_masks` the
document masking of packed rows, `model.hf` the Hugging Face interchange, `model.info` sizes and FLOPs.
Importing this package reads no files, environment or devices.
"""

from model.attention_masks import doc_ids_from_starts
from model.config import ModelConfig, YarnConfig, get_preset, preset_names
from model.hf import (
    config_from_hf,
    config_to_hf,
    hf_to_rnj,
    load_model,
    read_rnj,
    rnj_to_hf,
    state_dict_from_hf,
    state_dict_to_hf,
    write_rnj,
)
from model.info import model_info
from model.transformer import IGNORE_INDEX, LossOutput, Transformer

__all__ = [
    "IGNORE_INDEX",
    "LossOutput",
    "ModelConfig",
    "Transformer",
    "YarnConfig",
    "config_from_hf",
    "config_to_hf",
    "doc_ids_from_starts",
    "get_preset",
    "hf_to_rnj",
    "load_model",
    "model_info",
    "preset_names",
    "read_rnj",
    "rnj_to_hf",
    "state_dict_from_hf",
    "state_dict_to_hf",
    "write_rnj",
]
