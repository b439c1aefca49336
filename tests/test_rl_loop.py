"""The RL loop: the policy update, weight push (FP8 included), sync and async runs, outputs,
checkpoints and resuming."""

from __future__ import annotations

import json

import pytest
import torch

from glm45.model import GLM45ForCausalLM
from glm45.rl.buffer import PromptItem
from glm45.rl.clients import LocalRolloutClient, WeightUpdate
from glm45.rl.errors import RLError
from glm45.rl.grpo import assign_advantages, response_logprobs
from glm45.rl.loop import RLConfig, RLRun
from glm45.rl.overlong import OverlongConfig
from glm45.rl.rollout import RolloutConfig
from glm45.rl.trainer import PolicyTrainer, TrainerConfig
from glm45.rl.weights import snapshot, state_bytes
from glm45.tokenizer import GLMTokenizer
from rl_helpers import parity_tasks, tiny_dir


def _policy():
    return GLM45ForCausalLM.from_pretrained(tiny_dir(), dtype=torch.float32), GLMTokenizer.from_pretrained(tiny_dir())


def _groups(model, tok, n=3, k=4, seed=0):
    import copy

    client = LocalRolloutClient(copy.deepcopy(model), tok, RolloutConfig(group_size=k, max_tokens=8, seed=seed),
                                max_seq_len=96)
    groups, _ = client.rollout([PromptItem(i, t) for i, t in enumerate(parity_tasks(n))])
    return [g for g in groups if len({s.reward for s in g}) > 1]


def _seq_logprobs(model, samples, pad):
    from glm45.rl.batch import collate

    b = collate(samples, pad)
    with torch.no_grad():
        return response_logprobs(model, b.input_ids, b.loss_mask).sum(-1)


def test_update_moves_logprobs_along_advantages():
    model, tok = _policy()
    groups = _groups(model, tok)
    assert groups, "the parity reward should give some group reward variance"
    samples = [s for g in groups for s in g]
    assign_advantages(samples)
    before = _seq_logprobs(model, samples, tok.pad_token_id)
    trainer = PolicyTrainer(model, tok.pad_token_id, TrainerConfig(lr=1e-3, micro_batch_size=3, mini_batches=2))
    stats = trainer.step(groups)
    delta = _seq_logprobs(model, samples, tok.pad_token_id) - before
    adv = torch.tensor([s.advantage for s in samples])
    assert delta[adv > 0].mean() > 0 > delta[adv < 0].mean()
    assert trainer.version == stats["optimizer_steps"] == min(2, len(groups))
    assert stats["trained_tokens"] == sum(s.num_trainable_tokens for s in samples)
    assert 0 <= stats["clip_frac"] <= 1 and stats["entropy"] > 0 and stats["recomputed_logprobs"] == 0


def test_kl_penalty_holds_the_policy_near_its_frozen_starting_weights():
    from glm45.rl.grpo import GRPOConfig

    model, tok = _policy()
    groups = _groups(model, tok)
    samples = [s for g in groups for s in g]
    start = {k: v.clone() for k, v in model.state_dict().items()}
    moved = {}
    for kl in (0.0, 50.0):
        model.load_state_dict(start)
        trainer = PolicyTrainer(model, tok.pad_token_id, TrainerConfig(lr=1e-3, micro_batch_size=4, dtype="float32",
                                                                       grpo=GRPOConfig(kl_coef=kl)))
        stats = [trainer.step(groups) for _ in range(4)]
        assert (trainer.reference is None) == (kl == 0)
        moved[kl] = _seq_logprobs(model, samples, tok.pad_token_id)
        if kl:
            ref = trainer.reference.state_dict()
            assert all(torch.equal(ref[k], start[k]) for k in start)  # the reference never trains
            assert stats[0]["kl_ref"] == pytest.approx(0.0, abs=1e-9) and stats[-1]["kl_ref"] > 0
    model.load_state_dict(start)
    base = _seq_logprobs(model, samples, tok.pad_token_id)
    assert (moved[50.0] - base).abs().sum() < 0.5 * (moved[0.0] - base).abs().sum()


def test_missing_rollout_logprobs_are_recomputed():
    model, tok = _policy()
    groups = _groups(model, tok)
    samples = [s for g in groups for s in g]
    want = [list(s.rollout_logprobs) for s in samples]
    for s in samples:
        s.rollout_logprobs = None
    trainer = PolicyTrainer(model, tok.pad_token_id, TrainerConfig(micro_batch_size=2, dtype="float32"))
    assert trainer.recompute_logprobs(samples) == len(samples)
    for s, w in zip(samples, want):
        assert s.rollout_logprobs == pytest.approx(w, abs=1e-4)


def test_fp8_push_reaches_an_fp8_engine():
    import copy

    from glm45.infer import FP8Linear, quantize_model_fp8

    model, tok = _policy()
    full, fp8 = snapshot(model), snapshot(model, fp8=True)
    assert any(v.dtype == torch.float8_e4m3fn for v in fp8.values())
    assert state_bytes(fp8) < 0.6 * state_bytes(full)  # e4m3 linears and experts: a quarter of fp32
    assert fp8["lm_head.weight"].dtype == torch.float32  # the head stays in high precision
    client = LocalRolloutClient(copy.deepcopy(model), tok, RolloutConfig(), fp8=True, max_seq_len=64)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01)
    client.push(WeightUpdate(model, 3, fp8=True))
    assert client.version == 0 and client.apply_pending() and client.version == 3
    reference = quantize_model_fp8(copy.deepcopy(model))
    engine_model = client.engine.engine.model
    q_proj = "model.layers.0.self_attn.q_proj"
    assert isinstance(engine_model.get_submodule(q_proj), FP8Linear)
    assert torch.equal(engine_model.get_submodule(q_proj).weight.view(torch.uint8),
                       reference.get_submodule(q_proj).weight.view(torch.uint8))
    assert torch.equal(engine_model.model.embed_tokens.weight, model.model.embed_tokens.weight)


def _cfg(tmp_path, **kw):
    # a random model rarely stops within 8 tokens: train on truncated samples too
    base = dict(out=str(tmp_path / "run"), steps=2, prompts_per_step=3, eval_every=2, max_seq_len=96,
                overlong=OverlongConfig(mode="keep"),
                rollout=RolloutConfig(group_size=4, max_tokens=8), trainer=TrainerConfig(lr=1e-3, micro_batch_size=8))
    base.update(kw)
    return RLConfig(**base)


def test_sync_run_outputs(tmp_path):
    model, tok = _policy()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    run = RLRun(_cfg(tmp_path), model, tok, parity_tasks(12), parity_tasks(3, offset=100))
    summary = run.run()
    out = tmp_path / "run"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2] and "eval_reward" in rows[0] and "eval_reward" in rows[2]
    for r in rows[1:]:
        for key in ("reward_mean", "pass_rate", "response_len", "entropy", "clip_frac", "staleness_mean",
                    "samples_per_s", "time_rollout", "time_train", "time_sync", "loss", "weight_version"):
            assert r[key] is not None, key
        assert r["samples_trained"] == 12 and r["staleness_max"] <= 1  # a leftover group is one version old
    assert summary["steps"] == 2 and summary["counters"]["samples_trained"] == 24
    assert (out / "reward_curve.png").stat().st_size > 0 and (out / "summary.json").is_file()
    assert (out / "checkpoints" / "step_00000002" / "model" / "config.json").is_file()
    final = GLM45ForCausalLM.from_pretrained(out / "model", dtype=torch.float32)
    assert any(not torch.equal(final.state_dict()[k], start[k]) for k in start)
    # colocated sync: the engine runs exactly the trained weights
    engine_state = run.clients[0].engine.engine.model.state_dict()
    assert all(torch.equal(engine_state[k], v) for k, v in model.state_dict().items())
    assert run.clients[0].version == run.trainer.version == 2


@pytest.mark.slow
def test_resume_reproduces_the_uninterrupted_run(tmp_path):
    model, tok = _policy()
    whole = RLRun(_cfg(tmp_path / "a", steps=3, eval_every=0), model, tok, parity_tasks(12))
    whole.run()
    model, tok = _policy()
    RLRun(_cfg(tmp_path / "b", steps=2, eval_every=0, checkpoint_every=1), model, tok, parity_tasks(12)).run()
    model, tok = _policy()  # a fresh process would load the starting checkpoint again
    resumed = RLRun(_cfg(tmp_path / "b", steps=3, eval_every=0), model, tok, parity_tasks(12))
    summary = resumed.run()
    assert summary["steps_this_run"] == 1
    a = [json.loads(x) for x in (tmp_path / "a" / "run" / "metrics.jsonl").read_text().splitlines()]
    b = [json.loads(x) for x in (tmp_path / "b" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in b] == [1, 2, 3]
    assert [r["reward_mean"] for r in a] == [r["reward_mean"] for r in b]
    sa, sb = whole.model.state_dict(), resumed.model.state_dict()
    assert all(torch.allclose(sa[k], sb[k], atol=1e-6) for k in sa)
    assert summary["counters"]["samples_trained"] == 36


def test_async_run_bounds_staleness(tmp_path):
    model, tok = _policy()
    cfg = _cfg(tmp_path, mode="async", steps=3, eval_every=0, max_staleness=1, rollout_workers=2, worker_batch=2,
               fp8_rollout=True)
    summary = RLRun(cfg, model, tok, parity_tasks(40)).run()
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and [r["weight_version"] for r in rows] == [1, 2, 3]
    assert all(r["staleness_max"] <= 1 for r in rows) and all(r["samples_trained"] == 12 for r in rows)
    assert summary["counters"]["samples_generated"] >= 36


def test_config_errors(tmp_path):
    with pytest.raises(RLError, match="mode"):
        RLConfig(out=str(tmp_path), mode="fast")
    model, tok = _policy()
    with pytest.raises(RLError, match="no training tasks"):
        RLRun(_cfg(tmp_path), model, tok, [])
    with pytest.raises(RLError, match="at least one rollout engine"):
        RLRun(_cfg(tmp_path, rollout_workers=0), model, tok, parity_tasks(3))


def test_held_out_avg_at_k_averages_every_sample(tmp_path):
    """eval_samples k > 1 at a temperature: eval_reward is the mean of k sampled episodes per
    held-out task (Avg@k); greedy evaluation keeps one."""
    model, tok = _policy()
    run = RLRun(_cfg(tmp_path, eval_samples=4, eval_temperature=1.0), model, tok, parity_tasks(3),
                parity_tasks(5, offset=100))
    evaluator = run._evaluator()
    seen = []
    real_rollout = evaluator.rollout

    def recording_rollout(items, **kw):
        groups, stats = real_rollout(items, **kw)
        seen.append(groups)
        return groups, stats

    evaluator.rollout = recording_rollout
    result = run.evaluate()
    groups = seen[-1]
    assert [len(g) for g in groups] == [4] * 5
    rewards = [s.reward for g in groups for s in g]
    assert result["eval_reward"] == pytest.approx(sum(rewards) / 20)
    run.evaluate(temperature=0.0)
    assert [len(g) for g in seen[-1]] == [1] * 5
    for bad in (dict(eval_samples=0), dict(eval_samples=2, eval_temperature=0.0)):
        with pytest.raises(RLError, match="eval_samples"):
            _cfg(tmp_path, **bad)


def test_equal_rewards_everywhere_raise_no_learning_signal(tmp_path):
    from glm45.rl.errors import NoLearningSignal
    from glm45.rl.task_sets import arithmetic_tasks

    model, tok = _policy()
    tasks = [{**t, "answer": "98765432123456789"} for t in arithmetic_tasks(6)]
    with pytest.raises(NoLearningSignal, match="no group with a learning signal"):
        RLRun(_cfg(tmp_path, max_rollout_rounds=2), model, tok, tasks, []).run()
