"""The Bradley–Terry reward model: data, the scalar head, save/load, and learning a preference."""

from __future__ import annotations

import json

import pytest
import torch

from glm45.cli import main as cli_main
from glm45.model import GLM45ForCausalLM
from glm45.rl.errors import RLError
from glm45.rl.reward_model import (
    RewardModel, RewardScorer, pair_from_dict, read_pairs, synthetic_pairs,
)
from helpers_model import tiny_config


def test_pairs_and_errors(tmp_path):
    pairs = synthetic_pairs(20, seed=0, kind="case")
    assert synthetic_pairs(20, seed=0, kind="case") == pairs and len({p["prompt"] for p in pairs}) > 5
    for p in pairs:
        upper = "UPPERCASE" in p["prompt"]
        assert (p["chosen"] == p["chosen"].upper()) == upper and p["chosen"] != p["rejected"]
    for p in synthetic_pairs(20, seed=0, kind="arithmetic"):
        a, b = [int(x) for x in p["prompt"].removeprefix("What is ").rstrip("?").split(" + ")]
        assert p["chosen"].endswith(f"= {a + b}") and not p["rejected"].endswith(f"= {a + b}")
    pair = pair_from_dict({"messages": [{"role": "user", "content": "hi"}], "chosen": {"role": "assistant",
                           "content": "hello"}, "rejected": "go away"})
    assert pair.rejected == {"role": "assistant", "content": "go away"}
    with pytest.raises(RLError, match="rejected"):
        pair_from_dict({"prompt": "x", "chosen": "y"})
    with pytest.raises(RLError, match="prompt"):
        pair_from_dict({"chosen": "y", "rejected": "z"})
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "x", "chosen": "a", "rejected": "b"}\nnot json\n')
    with pytest.raises(RLError, match="bad.jsonl:2"):
        read_pairs(bad)
    with pytest.raises(RLError, match="unknown synthetic"):
        synthetic_pairs(1, kind="poetry")


def test_head_reads_the_last_real_token_and_ignores_padding():
    model = RewardModel(GLM45ForCausalLM(tiny_config())).eval()
    a, b = [5, 6, 7, 8, 9], [10, 11, 12]
    with torch.no_grad():
        alone = [model(torch.tensor([s]), torch.tensor([len(s)])).item() for s in (a, b)]
        padded = model(torch.tensor([a, b + [0, 0]]), torch.tensor([5, 3])).tolist()
        other_pad = model(torch.tensor([b + [99, 98]]), torch.tensor([3])).item()
    assert padded == pytest.approx(alone, abs=1e-5) and other_pad == pytest.approx(alone[1], abs=1e-5)
    assert alone[0] != pytest.approx(alone[1])
    # the LM head and the MTP layer are not trained
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "score.weight" in trainable and not any(n.startswith(("lm.lm_head", "lm.mtp")) for n in trainable)


def test_save_and_load_roundtrip(tmp_path):
    model = RewardModel(GLM45ForCausalLM(tiny_config())).eval()
    model.save_pretrained(tmp_path / "rm", max_length=64)
    loaded = RewardModel.from_pretrained(tmp_path / "rm").eval()
    ids = torch.tensor([[3, 4, 5, 6]])
    with torch.no_grad():
        assert loaded(ids, torch.tensor([4])).item() == pytest.approx(model(ids, torch.tensor([4])).item(), abs=1e-6)
    assert json.loads((tmp_path / "rm" / "reward_config.json").read_text())["max_length"] == 64
    with pytest.raises(RLError, match="not a reward model"):
        RewardModel.from_pretrained(tmp_path)


@pytest.mark.slow
def test_rm_learns_a_preference_and_ranks_held_out_pairs(tmp_path):
    from glm45.checkpoint.init_cli import init_checkpoint

    init_checkpoint("tiny", tmp_path / "base")
    for name, n, seed in (("train", 320, 0), ("held", 200, 1)):
        with open(tmp_path / f"{name}.jsonl", "w") as f:
            for p in synthetic_pairs(n, seed=seed, kind="case"):
                f.write(json.dumps(p) + "\n")
    rc = cli_main(["rm", "train", "--base", str(tmp_path / "base"), "--data", str(tmp_path / "train.jsonl"),
                   "--eval-data", str(tmp_path / "held.jsonl"), "--out", str(tmp_path / "rm"), "--max-length", "128",
                   "--quiet"])
    assert rc == 0
    summary = json.loads((tmp_path / "rm" / "summary.json").read_text())
    assert summary["eval_before"]["accuracy"] < 0.7 and summary["eval_after"]["accuracy"] >= 0.85
    assert (tmp_path / "rm" / "metrics.jsonl").read_text().strip()

    scorer = RewardScorer(tmp_path / "rm")
    held = read_pairs(tmp_path / "held.jsonl")
    assert scorer.pair_accuracy(held)["accuracy"] == pytest.approx(summary["eval_after"]["accuracy"])
    reward = scorer.as_reward()
    task = {"prompt": "Repeat this sentence in UPPERCASE letters: the market sells fresh bread"}
    good = reward(task, "<think>x</think>THE MARKET SELLS FRESH BREAD")
    bad = reward(task, "the market sells fresh bread")
    assert 0 < bad.value < good.value < 1

    rc = cli_main(["rm", "score", "--model", str(tmp_path / "rm"), "--data", str(tmp_path / "held.jsonl"),
                   "--out", str(tmp_path / "scores.jsonl")])
    scored = [json.loads(line) for line in (tmp_path / "scores.jsonl").read_text().splitlines()]
    assert rc == 0 and len(scored) == 200 and all("chosen_score" in r for r in scored)
    assert cli_main(["rm", "score", "--model", str(tmp_path / "base"), "--data", str(tmp_path / "held.jsonl")]) == 2
