"""The headline RL experiment's own parts (`glm45.rl.experiment`): the imperfect cold start and
the figures. The whole run (SFT to a model that earns rewards, then GRPO) takes minutes and is
measured in docs/LOG.md."""

from __future__ import annotations

import json

from glm45.rl.experiment import figures, noisy_cold_start
from glm45.rl.rewards import compute_reward
from glm45.tasks.arithmetic import final_answer_text


def test_noisy_cold_start_transcribes_a_fraction_of_answers_one_too_high():
    clean = noisy_cold_start(200, 0, 0.0)
    noisy = noisy_cold_start(200, 0, 0.5)
    corrupted = [d for d in noisy if d.meta.get("corrupted")]
    assert not any(d.meta.get("corrupted") for d in clean) and 70 <= len(corrupted) <= 130
    for c, n in zip(clean, noisy):
        # the question and the worked steps stay; only the boxed answer may change
        assert c.messages[:-1] == n.messages[:-1]
        assert c.messages[-1].get("reasoning_content") == n.messages[-1].get("reasoning_content")
        want = int(n.meta["answer"]) + (1 if n.meta.get("corrupted") else 0)
        assert n.messages[-1]["content"] == final_answer_text(str(want))
        task = {"reward_kind": "math", "answer": n.meta["answer"], "enable_thinking": False}
        assert compute_reward(task, n.messages[-1]["content"]).value == (0.0 if n.meta.get("corrupted") else 1.0)


def test_figures_draw_every_run(tmp_path):
    runs = {}
    for name, offset in (("token_mean", 0.0), ("seq_mean", 0.1)):
        run = tmp_path / name
        run.mkdir()
        rows = [{"step": 0, "eval_reward": 0.2 + offset}] + [
            {"step": s, "reward_mean": 0.1 * s, **({"eval_reward": 0.3 + offset} if s == 2 else {})} for s in (1, 2)]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        runs[name] = run
    paths = figures(tmp_path, runs, "test", heldout="Avg@4, T = 1", rollout_temperature=0.8)
    assert paths == [str(tmp_path / "heldout.png"), str(tmp_path / "reward.png")]
    assert all((tmp_path / p).stat().st_size > 1000 for p in paths)
