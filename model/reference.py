"""The reference model of the model-based difficulty grader: mean next-token loss of a text.

A document's loss is the mean cross-entropy of predicting each of its first `max_tokens` tokens (after a
bos) from the ones before it. Documents go through the model in passes of the fixed shape
(batch_size, max_tokens), padded, so that a document's loss is the same whichever documents share its pass.
The model and tokenizer are loaded once per Python worker, on first use, never pickled from the driver.
"""

from __future__ import annotations

from pipeline.grading.config import ReferenceModelConfig

_LOADED: dict[ReferenceModelConfig, ReferenceScorer] = {}


def reference_scorer(cfg: ReferenceModelConfig) -> ReferenceScorer:
    """The scorer for `cfg`, loaded on first use in this process."""
    if cfg not in _LOADED:
        _LOADED[cfg] = ReferenceScorer(cfg)
    return _LOADED[cfg]


class ReferenceScorer:
    def __init__(self, cfg: ReferenceModelConfig):
        import torch

        from model import load_model
        from tokenizer.files import load_tokenizer

        self.cfg = cfg
        self.device = "cuda" if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()) else "cpu"
        self.tokenizer = load_tokenizer(cfg.tokenizer_path)
        self.model = load_model(cfg.checkpoint_path, device=self.device).eval()
        model_cfg = self.model.cfg
        if cfg.max_tokens > model_cfg.max_seq_len:
            raise ValueError(f"[grade.reference_model] max_tokens {cfg.max_tokens} exceeds the checkpoint's "
                             f"max_seq_len {model_cfg.max_seq_len}: lower max_tokens")
        if self.tokenizer.vocab_size > model_cfg.vocab_size:
            raise ValueError(f"the tokenizer has {self.tokenizer.vocab_size} ids but the checkpoint only "
                             f"{model_cfg.vocab_size}: name the tokenizer the checkpoint was trained with")

    def losses(self, texts: list[str]) -> list[float]:
        """Mean next-token loss (nats) of each text; 0 for a text too short to predict anything."""
        ids = [[self.tokenizer.bos_id, *self.tokenizer.encode(t)][: self.cfg.max_tokens] for t in texts]
        out: list[float] = []
        for start in range(0, len(ids), self.cfg.batch_size):
            out += self._pass(ids[start:start + self.cfg.batch_size])
        return out

    def _pass(self, rows: list[list[int]]) -> list[float]:
        import torch
        import torch.nn.functional as F

        B, T = self.cfg.batch_size, self.cfg.max_tokens
        tokens_BT = torch.full((B, T), self.tokenizer.pad_id, dtype=torch.long)
        for i, row in enumerate(rows):
            tokens_BT[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        with torch.no_grad():
            logits_BTV = self.model(tokens_BT.to(self.device)).float().cpu()
        losses = []
        for i, row in enumerate(rows):
            n = len(row) - 1  # predictions with a real target
            if n < 1:
                losses.append(0.0)
                continue
            loss = F.cross_entropy(logits_BTV[i, :n], tokens_BT[i, 1:n + 1], reduction="mean")
            losses.append(float(loss))
        return losses
