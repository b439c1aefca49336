"""The copy-capable base for agent RL (`glm45.rl.copy_base`): its data, its probe, a short run."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from glm45.chat import render
from glm45.envs.search import SEARCH_TOOLS, SYSTEM_PROMPT
from glm45.model import GLM45ForCausalLM
from glm45.rl.copy_base import CopyBaseConfig, copy_probe, environment_prefix, repetition_row, train_copy_base
from glm45.tokenizer.glm import GLMTokenizer
from rl_helpers import tiny_dir


class InductionOracle(nn.Module):
    """Predicts, at each position, the token that followed the earlier position whose preceding
    tokens match the current ones longest (exact induction); `copy=False` always predicts 0."""

    def __init__(self, vocab: int, copy: bool = True) -> None:
        super().__init__()
        self.vocab, self.copy = vocab, copy

    def forward(self, ids: torch.Tensor) -> SimpleNamespace:
        row = ids[0].tolist()
        logits = torch.zeros(1, len(row), self.vocab)
        for i in range(len(row)):
            best, best_len = None, 0
            for j in range(i) if self.copy else ():
                n = 0
                while n <= j and row[j - n] == row[i - n]:
                    n += 1
                if n > best_len:
                    best, best_len = j, n
            logits[0, i, row[best + 1] if best is not None else 0] = 1.0
        return SimpleNamespace(logits=logits)


def test_probe_scores_copying_and_not_copying():
    tok = GLMTokenizer.from_pretrained(tiny_dir())
    assert copy_probe(InductionOracle(len(tok)), tok, n=10) > 0.9
    assert copy_probe(InductionOracle(len(tok), copy=False), tok, n=10) < 0.1


def test_repetition_rows_and_the_environment_prefix():
    tok = GLMTokenizer.from_pretrained(tiny_dir())
    prefix = environment_prefix("search", tok)
    assert tok.decode(prefix) == render([{"role": "system", "content": SYSTEM_PROMPT}], SEARCH_TOOLS,
                                        enable_thinking=False)
    # a step-wise function-call item opens like the tool agent's episode of the same task
    assert environment_prefix("function_call", tok) == environment_prefix("tool_agent", tok)
    row = repetition_row(tok.encode, random.Random(0), 400, prefix=[5, 6])
    assert len(row) == 400 and row[:2] == [5, 6]
    first = tok.decode(row[2:]).split("\n\n")[0]  # "span. span."
    span, again = first.split(". ", 1)
    assert again == span + "." and 3 <= len(span.split()) <= 12


def test_a_short_run_trains_and_writes_a_loadable_base(tmp_path):
    cfg = CopyBaseConfig(preset="tiny", steps=40, batch_size=4, seq_len=64, long_steps=2, long_batch_size=1,
                         long_seq_len=1200, max_position_embeddings=2048)
    summary = train_copy_base(tiny_dir(), tmp_path / "copy", cfg)
    assert summary["loss_phase1_end"] < summary["loss_phase1_start"] - 1.0  # the syllables are learnt
    assert 500 < summary["prefix_tokens"] < 1200
    assert all(0.0 <= v <= 1.0 for probes in summary["probes"].values() for v in probes.values())
    model = GLM45ForCausalLM.from_pretrained(tmp_path / "copy")
    assert model.config.num_nextn_predict_layers == 0 and model.config.vocab_size == len(GLMTokenizer.from_pretrained(
        tmp_path / "copy"))
    assert json.loads((tmp_path / "copy" / "summary.json").read_text())["config"]["steps"] == 40
    # adapting that base to another environment's system block: phase 2 only, from its weights
    cfg.env, cfg.steps = "tool_agent", 0
    adapted = train_copy_base(tiny_dir(), tmp_path / "tool", cfg, init=tmp_path / "copy")
    assert adapted["init"] == str(tmp_path / "copy") and adapted["loss_phase1_start"] is None
    assert adapted["probes"]["after_phase1"]["short"] == summary["probes"]["final"]["short"]
    assert adapted["prefix_tokens"] != summary["prefix_tokens"]
    with pytest.raises(ValueError, match="no room"):  # rows too short to hold the system block
        train_copy_base(tiny_dir(), tmp_path / "short", CopyBaseConfig(preset="tiny", long_seq_len=600))
