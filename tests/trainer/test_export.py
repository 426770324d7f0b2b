import sys

import torch
from click.testing import CliRunner

from model.checkpoint import Checkpointer
from model.export import export_run
from model.train import main as train_main
from model.train import model_config
from model.transformer import Transformer
from pipeline.config import load_build
from rnj.cli import main as rnj
from tests.trainer.fake_build import write_build
from tests.trainer.test_cli import short, user_error


def test_a_trained_run_exports_to_a_folder_transformers_loads_and_generates_from(tmp_path, monkeypatch):
    from transformers import Gemma3ForCausalLM

    config = write_build(tmp_path)
    train_main([str(config), "--all"])
    cfg = load_build(str(config))
    folder = export_run(cfg, tmp_path / "hf")

    ours = Transformer(model_config(cfg, cfg.stages[-1], 96))
    Checkpointer.load_weights(Checkpointer(tmp_path / "out/train/checkpoints").latest(), ours)
    theirs = Gemma3ForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    tokens = torch.randint(0, 90, (2, 40))
    with torch.no_grad():
        assert torch.allclose(ours(tokens), theirs(tokens).logits, atol=1e-4)
        generated = theirs.generate(tokens[:1, :8], max_new_tokens=5, do_sample=False)
    assert generated.shape == (1, 13)

    # --generate needs transformers, an optional (dev) dependency: without it, a short message, not an ImportError
    monkeypatch.setitem(sys.modules, "transformers", None)
    result = CliRunner().invoke(rnj, ["export", str(config), str(tmp_path / "again"), "--generate", "def"])
    message = short(user_error(result))
    assert "--generate loads the export with transformers" in message and "pip install" in message
    assert not (tmp_path / "again").exists(), "refused before exporting, not after"
    folder = export_run(cfg, tmp_path / "again")  # the export itself needs no transformers
    assert (folder / "config.json").exists()
