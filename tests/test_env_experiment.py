"""RL in agent environments (`glm45.rl.env_experiment`) on a minimal budget, and the "search"
SFT domain its cold start uses."""

from __future__ import annotations

import json

import pytest

from glm45.envs.base import read_turn
from glm45.envs.search import SEARCH_TOOLS, answer_matches, extract_answer
from glm45.rl.env_experiment import Budget, main, rl_tasks, sft_documents, tasks
from glm45.rl.errors import RLError
from glm45.sft.builtin import prompt_samples, reference_samples, search_questions
from glm45.sft.records import SFTError
from glm45.train.metrics import read_metrics

ENDS = {"done", "format_error", "max_turns", "max_context", "truncated_turn"}


def test_search_domain_plays_the_searcher_through_the_environment():
    oracle = reference_samples("search", 12, 0, search_noise=0.0, max_hops=2)
    assert len(oracle) == 12  # the oracle never runs out of turns
    for doc in oracle:
        assert doc.tools == SEARCH_TOOLS and doc.meta["enable_thinking"] is False
        roles = [m["role"] for m in doc.messages]
        assert roles[:2] == ["system", "user"] and roles[-1] == "assistant" and "tool" in roles
        for m in doc.messages[2:-1]:
            if m["role"] == "assistant":  # every step is a call the environment accepts
                assert m["tool_calls"] and not read_turn(m, SEARCH_TOOLS).format_errors
            else:  # and what came back is the collection's answer
                assert m["role"] == "tool" and json.loads(m["content"])
        final = doc.messages[-1]
        assert not final.get("tool_calls")
        assert answer_matches(final["content"], doc.meta["answer"]) == doc.meta["correct"]
        assert (extract_answer(final["content"]) == doc.meta["answer"]) == doc.meta["correct"]
    # noise 0 still guesses wrong 10% of the time (NoisySearcher's `wrong`)
    assert sum(d.meta["correct"] for d in oracle) >= 9
    noisy = reference_samples("search", 12, 0, search_noise=0.6, search_repeats=2, max_hops=2, max_turns=8)
    assert len({d.id for d in noisy}) == len(noisy) <= 24
    assert sum(len(d.messages) for d in noisy) / len(noisy) > sum(len(d.messages) for d in oracle) / len(oracle)


def test_search_questions_name_their_start_and_split_cleanly():
    train, test = search_questions(40, 0, "train", 1), search_questions(40, 1, "test", 1)
    assert all(len(q["hops"]) == 1 and not q["obfuscated"] and q["hops"][0]["subject"] in q["question"]
               for q in train + test)
    assert not {q["question"] for q in train} & {q["question"] for q in test}
    with pytest.raises(SFTError, match="episodes"):
        prompt_samples("search", 2, 0)


def test_search_cold_start_in_a_larger_world_without_wrong_answers():
    small = search_questions(340, 0, "train", 1)
    with pytest.raises(SFTError, match="scale 1"):  # the default world runs out of one-hop questions
        search_questions(len(small) + 200, 0, "train", 1)
    big = search_questions(len(small) + 200, 0, "train", 1, world_scale=2)
    assert len({q["question"] for q in big}) == len(big) and all(q["env_config"]["scale"] == 2 for q in big)
    docs = reference_samples("search", 30, 0, search_noise=0.0, max_hops=1, search_query="question",
                             search_world_scale=2, search_wrong=0.0)
    assert len(docs) == 30 and all(d.meta["correct"] for d in docs)
    assert [d.messages[1]["content"] for d in docs] == [q["question"] for q in big[:30]]
    assert all(d.messages[1]["content"] == d.messages[2]["tool_calls"][0]["function"]["arguments"]["query"]
               for d in docs)  # the searcher's first query is the question itself


def test_a_searcher_that_echoes_the_subject_answers_it_when_wrong():
    docs = reference_samples("search", 30, 0, search_noise=0.0, max_hops=1, search_query="question",
                             search_wrong=0.5, search_wrong_answer="subject")
    wrong = [d for d in docs if not d.meta["correct"]]
    assert 5 <= len(wrong) <= 25
    for d in wrong:  # the question names its subject, and the wrong answer is exactly that name
        answer = extract_answer(d.messages[-1]["content"])
        assert answer in d.messages[1]["content"] and answer != d.meta["answer"]
    with pytest.raises(ValueError, match="wrong_answer"):
        reference_samples("search", 2, 0, search_wrong_answer="nonsense")


def test_a_searcher_that_guesses_answers_before_searching():
    options = dict(search_noise=0.0, search_wrong=0.0, max_hops=1, search_query="question")
    clean = reference_samples("search", 40, 0, **options)
    guessed = reference_samples("search", 40, 0, search_guess=0.5, **options)
    skipped = [g for g in guessed if len(g.messages) == 3]
    assert 10 <= len(skipped) <= 30
    for c, g in zip(clean, guessed):
        if g in skipped:  # system, question, and straight to a wrong answer
            assert [m["role"] for m in g.messages] == ["system", "user", "assistant"]
            assert not g.meta["correct"] and extract_answer(g.messages[-1]["content"]) != g.meta["answer"]
        else:  # otherwise the very episode of a searcher that never guesses
            assert g.messages == c.messages and g.meta["correct"]


def test_bad_choices_are_named_before_anything_runs(tmp_path, capsys):
    for flag in ("--wrong-answer", "--query"):
        with pytest.raises(SystemExit) as e:
            main(["--env", "search", "--out", str(tmp_path), flag, "nonsense"])
        assert e.value.code == 2 and f"{flag} must be one of" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:  # RL settings too, before the cold start's SFT
        main(["--env", "search", "--out", str(tmp_path), "--eval-samples", "3"])
    assert e.value.code == 2 and "eval_temperature > 0" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def _clean_and_flawed(kinds: str, **flaw) -> list[tuple]:
    """The tool expert's cold-start documents for 120 tasks, paired with a flawed expert's."""
    budget = Budget(sft_samples=120, kinds=kinds)
    flawed = Budget(**{**budget.__dict__, **flaw})
    return list(zip(sft_documents("function_call", budget, 0), sft_documents("function_call", flawed, 0)))


def test_an_imperfect_tool_expert_drops_last_arguments_at_the_given_rate():
    calls = dropped = 0
    for a, b in _clean_and_flawed("single,multi,parallel", call_flaw=0.5):
        assert [m["role"] for m in a.messages] == [m["role"] for m in b.messages]
        for ma, mb in zip(a.messages, b.messages):
            assert ma.get("content") == mb.get("content")  # only call arguments change
            for ca, cb in zip(ma.get("tool_calls") or [], mb.get("tool_calls") or []):
                full, got = ca["function"]["arguments"], cb["function"]["arguments"]
                calls += 1
                if got != full:
                    dropped += 1
                    assert list(got) == list(full)[:-1] and all(got[k] == full[k] for k in got)
    assert calls > 100 and 0.35 < dropped / calls < 0.65


def test_an_expert_in_a_loop_repeats_its_last_calls_instead_of_answering():
    with_calls = repeated = 0
    for a, b in _clean_and_flawed("single,multi,parallel,irrelevant", repeat_call=0.5):
        assert b.messages[:-1] == a.messages[:-1]  # only the final turn can change
        calls = [m["tool_calls"] for m in a.messages if m.get("tool_calls")]
        if not calls:  # nothing to repeat: the answer stays
            assert b.messages[-1] == a.messages[-1]
            continue
        with_calls += 1
        if b.messages[-1] != a.messages[-1]:
            repeated += 1
            assert b.messages[-1] == {"role": "assistant", "content": "", "tool_calls": calls[-1]}
    assert with_calls > 60 and 0.3 < repeated / with_calls < 0.7


def test_tool_agent_cold_start_matches_the_environment_prompt():
    budget = Budget(sft_samples=6, kinds="single,multiturn")
    docs = sft_documents("tool_agent", budget, 0)
    records = tasks("tool_agent", budget, 6, 0, "train")
    from glm45.envs.base import make_env

    for doc, rec in zip(docs, records):
        env = make_env(rec["env"], **rec["env_config"])
        prompt, tools = env.reset(rec["task"])
        assert doc.messages[:2] == prompt and doc.tools == tools  # what RL starts from
        assert any(m["role"] == "tool" for m in doc.messages) and doc.messages[-1]["role"] == "assistant"


def test_function_call_steps_are_turns_of_the_tool_agent_cold_start():
    budget = Budget(sft_samples=8, kinds="single,multi,multiturn")
    docs = sft_documents("function_call", budget, 0)
    assert [d.messages for d in docs] == [d.messages for d in sft_documents("tool_agent", budget, 0)]
    items = tasks("function_call", budget, 8, 0, "train")
    assert len(items) > len(docs)  # one item per assistant turn
    for item in items:
        doc = next(d for d in docs if item["id"].startswith(d.id + "/"))
        at = len(item["messages"])
        assert doc.messages[:at] == item["messages"] and doc.messages[0]["role"] == "system"
        expected = doc.messages[at]  # the turn the policy writes: the annotated calls, or the answer
        assert expected["role"] == "assistant" and item["tools"] == doc.tools
        assert item["calls"] == [{"name": c["function"]["name"], "arguments": c["function"]["arguments"]}
                                 for c in expected.get("tool_calls") or []]


@pytest.mark.parametrize("env", ["search", "function_call"])
def test_fresh_rl_tasks_are_train_tasks_the_cold_start_never_saw(env):
    budget = Budget(sft_samples=12, kinds="single,multiturn", fresh_rl_tasks=True)
    own = tasks(env, budget, 12, 0, "train")
    fresh = rl_tasks(env, budget, 0)
    prompts = {json.dumps(t.get("question") or t["messages"]) for t in own}
    assert fresh and not prompts & {json.dumps(t.get("question") or t["messages"]) for t in fresh}
    assert rl_tasks(env, Budget(sft_samples=12, kinds="single,multiturn"), 0) == own  # the default
    if env == "search":  # a cold start on every one-hop question of the default world leaves none
        pool = 340
        while _draws("search", pool + 1):
            pool += 1
        with pytest.raises(RLError, match="every train-split"):
            rl_tasks("search", Budget(sft_samples=pool, fresh_rl_tasks=True), 0)


def _draws(env: str, n: int) -> bool:
    try:
        tasks(env, Budget(), n, 0, "train")
    except SFTError:
        return False
    return True


@pytest.mark.parametrize("env", ["search", "tool_agent", "function_call"])
def test_pipeline_on_a_minimal_budget(env, tmp_path):
    out = tmp_path / env
    assert main(["--env", env, "--out", str(out), "--sft-samples", "8", "--sft-repeats", "1", "--sft-steps", "2",
                 "--steps", "2", "--prompts-per-step", "2", "--group-size", "2", "--n-eval", "4", "--n-shown", "2",
                 "--eval-every", "1", "--max-tokens", "12", "--max-turns", "3", "--dynamic-sampling", "false",
                 *(["--fresh-rl-tasks", "true"] if env == "function_call" else [])]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["env"] == env and 0 < summary["n_eval_tasks"] <= (4 if env != "function_call" else 4 * 6)
    assert sorted(map(int, summary["heldout_by_step"])) == [0, 1, 2]  # before RL, every step, the end
    assert all(0.0 <= v <= 1.0 for v in summary["heldout_by_step"].values())
    for name in ("heldout.png", "reward.png"):
        assert (out / name).stat().st_size > 1000
    rows = [r for r in read_metrics(out / "rl" / "metrics.jsonl") if r.get("reward_mean") is not None]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(0.0 <= r["reward_mean"] <= 1.0 and r["samples_generated"] >= 4 for r in rows)
    evals = tasks(env, Budget(**summary["budget"]), 4, 1, "test")
    for name in ("sft", "rl"):
        episodes = [json.loads(line) for line in (out / f"trajectories_{name}.jsonl").read_text().splitlines()]
        if env == "function_call":  # one turn after the item's prompt
            by_id = {t["id"]: t for t in evals}
            assert len(episodes) == 2
            for e in episodes:
                prompt = by_id[e["id"]]["messages"]
                assert e["messages"][:-1] == prompt and prompt[0]["role"] == "system"
                assert e["messages"][-1] == {"role": "assistant", "content": e["model_text"]}
                assert e["end"] in ENDS and e["turns"] == 1 and e["reward"] in (0.0, 1.0)
            continue
        assert [e["id"] for e in episodes] == [t["id"] for t in evals[:2]]
        for e, task in zip(episodes, evals):
            # the environment's prompt, then the policy's turns as the environment recorded them
            question = task["question"] if env == "search" else task["task"]["user"]
            assert e["messages"][0]["role"] == "system" and e["messages"][1]["content"] == question
            assert e["end"] in ENDS and 0.0 <= e["reward"] <= 1.0 and e["model_text"]
            if e["end"] != "truncated_turn":  # a turn cut at max_tokens never reaches the environment
                assert e["messages"][2]["role"] == "assistant"


def test_rl_straight_from_a_given_checkpoint(tmp_path):
    from glm45.checkpoint.init_cli import init_checkpoint

    base = tmp_path / "pretrained"
    init_checkpoint("tiny", base, 0, vocab_size=2048, max_position_embeddings=2048)
    out = tmp_path / "run"
    assert main(["--env", "tool_agent", "--out", str(out), "--base", str(base), "--sft-steps", "0", "--steps", "1",
                 "--prompts-per-step", "2", "--group-size", "2", "--n-eval", "2", "--n-shown", "1",
                 "--max-tokens", "8", "--max-turns", "2", "--dynamic-sampling", "false",
                 "--eval-samples", "3", "--eval-temperature", "1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["sft"]["steps"] == 0 and sorted(map(int, summary["heldout_by_step"])) == [0, 1]
    # held-out Avg@3: the mean of 3 binary episode rewards on each of 2 tasks
    assert summary["budget"]["eval_samples"] == 3 and summary["n_eval_tasks"] == 2
    assert all(abs(v * 6 - round(v * 6)) < 1e-3 for v in summary["heldout_by_step"].values())
    evals = [r for r in read_metrics(out / "rl" / "metrics.jsonl") if "eval_reward" in r]
    assert len(evals) == 2 and all(r["eval_response_len"] > 0 for r in evals)
    assert not (out / "sft").exists() and not (out / "base").exists()  # no cold start, no random base
    assert (out / "rl" / "model" / "model.safetensors").is_file()
