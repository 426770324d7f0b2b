"""Export a training run to a Hugging Face folder: `rnj export CONFIG DST [--generate PROMPT]`.

The run's latest checkpoint (the end of its last trained stage) is loaded into the model of that stage,
written as our checkpoint folder, converted to `Gemma3ForCausalLM` (model/hf.py) and given the build's
tokenizer files, so that `transformers`, vLLM and llama.cpp load it unchanged.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from model.checkpoint import Checkpointer
from model.data import StageData
from model.hf import rnj_to_hf, write_rnj
from model.train import model_config, run_dir_of
from model.transformer import Transformer
from pipeline.commit import JobOutput
from pipeline.config import BuildConfig
from pipeline.errors import UserError


def export_run(cfg: BuildConfig, dst: str | Path, overwrite: bool = True) -> Path:
    """Write the run's latest checkpoint to `dst` as a Hugging Face Gemma 3 text folder."""
    checkpoints = Checkpointer(run_dir_of(cfg) / "checkpoints")
    latest = checkpoints.latest()
    build_file = cfg.path or "BUILD_FILE"
    if latest is None:
        raise UserError(f"no complete checkpoint in {checkpoints.folder} to export: train first "
                        f"(`rnj train {build_file} --all`)")
    stage_name = _stage_of(latest)
    stage = next((s for s in cfg.stages if s.name == stage_name), None)
    if stage is None:
        raise UserError(f"the latest checkpoint {latest} is of stage {stage_name!r}, which {build_file} no longer "
                        f"has (its stages: {[s.name for s in cfg.stages]}): export with the build file it was "
                        f"trained with")
    vocab_size = StageData(cfg, stage, verify="metadata").vocab_size
    model = Transformer(model_config(cfg, stage, vocab_size))
    Checkpointer.load_weights(latest, model)
    tokenizer_dir = Path(JobOutput(cfg.build.output, "tokenize").child("tokenizer").removeprefix("file://"))
    special_ids = _special_ids(cfg) if (tokenizer_dir / "tokenizer.json").exists() else None
    dst = Path(dst)
    with tempfile.TemporaryDirectory() as tmp:
        ours = write_rnj(Path(tmp) / "rnj", model.cfg, model.state_dict())
        rnj_to_hf(ours, dst, special_ids=special_ids, overwrite=overwrite)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if (tokenizer_dir / name).exists():
            shutil.copyfile(tokenizer_dir / name, dst / name)
    return dst


def _stage_of(checkpoint: Path) -> str:
    import torch

    return torch.load(checkpoint / "trainer_state-rank0.pt", weights_only=False)["stage"]


def _special_ids(cfg: BuildConfig) -> dict[str, int]:
    from tokenizer import load_committed_tokenizer

    tok = load_committed_tokenizer(cfg)
    return {"bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id, "pad_token_id": tok.pad_id}


def require_transformers() -> None:
    """`--generate` loads the export with transformers, an optional (dev) dependency: say so up front."""
    try:
        import transformers  # noqa: F401
    except ImportError as err:
        raise UserError(f"--generate loads the export with transformers, which cannot be imported ({err}): "
                        f"install it (`pip install 'rnj[dev]'` or `pip install transformers`), or leave out "
                        f"--generate") from err


def generate(folder: str | Path, prompt: str, max_new_tokens: int = 24) -> str:
    """Greedy continuation of `prompt` by the exported folder, loaded with transformers (a dev dependency)."""
    require_transformers()
    from transformers import Gemma3ForCausalLM, PreTrainedTokenizerFast

    if not (Path(folder) / "tokenizer.json").exists():
        raise UserError(f"{folder} has no tokenizer.json (the build's tokenize job has not run), so --generate "
                        f"cannot encode a prompt: run `rnj run BUILD_FILE --only tokenize` and export again")

    tokenizer = PreTrainedTokenizerFast.from_pretrained(str(folder))
    model = Gemma3ForCausalLM.from_pretrained(str(folder)).eval()
    inputs = tokenizer(prompt, return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(output[0][inputs["input_ids"].shape[1]:], skip_special_tokens=True)
