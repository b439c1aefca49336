"""Rejection-sampling filters on planted good and bad samples; prompt selection and response
scaling with a scripted backend."""

from __future__ import annotations

import copy

import pytest

from glm45.data.document import Document
from glm45.eval.backend import ChatResult, ChatSample
from glm45.sft.builtin import prompt_samples, reference_samples
from glm45.sft.filters import FilterPipeline, LengthFilter, ReasoningFormatFilter, RepetitionFilter, TruncationFilter
from glm45.sft.rejection import RejectionConfig, rejection_sample, select_prompts
from glm45.sft.verifiers import (
    CodeTestFilter,
    MathAnswerFilter,
    RewardModelFilter,
    TerminalStateFilter,
    ToolProtocolFilter,
    default_pipeline,
)


def chat(text: str, reasoning: str | None = "Add them.", thinking: bool = True, **meta) -> Document:
    a = {"role": "assistant", "content": text}
    if reasoning is not None:
        a["reasoning_content"] = reasoning
    return Document(text="", meta={"finish_reason": "stop", "enable_thinking": thinking, **meta},
                    messages=[{"role": "user", "content": "What is 2 + 3?"}, a])


def keeps(f, d: Document) -> bool:
    return f.check(d) is None


def test_truncation():
    f = TruncationFilter()
    assert keeps(f, chat("The answer is 5."))
    assert not keeps(f, chat("The answer is", finish_reason="length"))
    assert not keeps(f, chat("", reasoning="2 + 3 = 5"))  # reasoning only: cut before answering
    cut = chat("x", finish_reasons=["stop", "length"])
    assert f.check(cut) == "hit the token limit"


def test_too_short():
    f = LengthFilter(min_chars=10)
    assert keeps(f, chat("The answer is 5.", reasoning=None))
    assert not keeps(f, chat("5", reasoning=None))


def test_repetition():
    f = RepetitionFilter()
    good = chat("The answer is \\boxed{100000}.", reasoning="2 + 3 = 5.\n5 * 20000 = 100000.")
    assert keeps(f, good)
    loop = chat("The answer is 5. " + "and then we add it again " * 12, reasoning="ok")
    assert f.check(loop) is not None
    lines = chat("ok", reasoning="\n".join(["Let me check this again."] * 6))
    assert f.check(lines) is not None
    tail = chat("The answer is 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5", reasoning="fine")
    assert f.check(tail) == "loops at the end"


def test_reasoning_format():
    f = ReasoningFormatFilter()
    assert keeps(f, chat("The answer is 5."))
    assert f.check(chat("The answer is 5.", reasoning=None)) == "no reasoning with thinking on"
    assert f.check(chat("<think>hmm</think> 5", reasoning="x")) == "<think> inside content"
    assert f.check(chat("5", reasoning="a </think> b")) == "</think> inside reasoning_content"
    assert keeps(f, chat("The answer is 5.", reasoning=None, thinking=False))
    assert f.check(chat("5", reasoning="thought", thinking=False)) == "reasoning with thinking off"
    assert keeps(f, chat("Hello!", reasoning=None, require_reasoning=False))


def test_math_answer_uses_math_verify():
    f = MathAnswerFilter()
    assert keeps(f, chat("The answer is \\boxed{5}.", verifier="math", answer="5"))
    assert keeps(f, chat("The answer is \\boxed{\\frac{1}{2}}.", verifier="math", answer="0.5"))
    assert f.check(chat("The answer is \\boxed{6}.", verifier="math", answer="5")) == "wrong answer"
    assert f.check(chat("It is five.", verifier="math", answer="5")) == "no final answer found"
    assert keeps(f, chat("anything"))  # no verifier: passed through


def test_code_tests_run_in_sandbox():
    (good,) = reference_samples("reasoning", 1, 0, code_fraction=1.0)
    bad = copy.deepcopy(good)
    bad.messages[-1]["content"] = "```python\ndef wrong(*a):\n    return None\n```"
    hang = copy.deepcopy(good)
    entry = good.meta["code_test"]["entry_point"]
    hang.messages[-1]["content"] = f"```python\ndef {entry}(*a):\n    while True: pass\n```"
    hang.meta["code_test"] = {**hang.meta["code_test"], "timeout_s": 1.0}
    verdicts = CodeTestFilter().check_batch([good, bad, hang])
    assert verdicts == [None, "tests failed", "tests timed out"]


def test_reward_model_hook():
    scores = {"great": 0.9, "poor": 0.1}
    f = RewardModelFilter(lambda d: scores[d.messages[-1]["content"]], threshold=0.5)
    good, poor = chat("great", verifier="reward"), chat("poor", verifier="reward")
    assert keeps(f, good) and good.meta["reward"] == 0.9
    assert f.check(poor) == "reward below 0.5"
    assert keeps(f, chat("poor"))  # objective samples are not scored
    default = RewardModelFilter()  # reference-overlap stand-in
    assert keeps(default, chat("The capital of Peru is Lima.", verifier="reward", reference="The capital of Peru is Lima."))
    assert not keeps(default, chat("I like turtles.", verifier="reward", reference="The capital of Peru is Lima."))


@pytest.fixture(scope="module")
def agent_docs():
    docs = reference_samples("agent", 30, 0, agent_kinds=("single", "multi", "parallel", "multiturn"))
    for d in docs:
        d.meta["finish_reason"] = "stop"
    return docs


def test_tool_protocol(agent_docs):
    f = ToolProtocolFilter()
    assert all(keeps(f, d) for d in agent_docs)
    d = next(x for x in agent_docs if x.meta["task"]["kind"] == "single")
    i = next(k for k, m in enumerate(d.messages) if m.get("tool_calls"))

    def planted(edit):
        x = copy.deepcopy(d)
        edit(x.messages, i)
        return f.check(x)

    def rename(ms, i):
        ms[i]["tool_calls"][0]["function"]["name"] = "launch_rocket"

    def bad_args(ms, i):
        ms[i]["tool_calls"][0]["function"]["arguments"] = {"nonsense": 1}

    def unparseable(ms, i):
        ms[i]["tool_calls"][0]["invalid_arguments"] = "<arg_key>city"

    def unanswered(ms, i):
        del ms[i + 1]

    def error_result(ms, i):
        ms[i + 1]["content"] = '{"error": "no weather data"}'

    def orphan(ms, i):
        ms.insert(i, {"role": "tool", "content": "{}"})

    assert planted(rename) == "unknown tool"
    assert planted(bad_args) == "arguments violate the schema"
    assert planted(unparseable) == "unparseable arguments"
    assert planted(unanswered) == "call left unanswered"
    assert planted(error_result) == "a call failed"
    assert planted(orphan) == "tool message without a call"


def test_terminal_state(agent_docs):
    f = TerminalStateFilter()
    assert all(keeps(f, d) for d in agent_docs)
    stateful = next(d for d in agent_docs if any(c["name"] in ("set_alarm", "add_todo", "send_email", "send_text",
                                                              "create_event") for c in d.meta["task"]["expected"]))
    wrong = copy.deepcopy(stateful)
    for m in wrong.messages:
        for c in m.get("tool_calls") or []:
            args = c["function"]["arguments"]
            for k, v in args.items():
                if isinstance(v, str) and k not in ("to", "phone", "time", "date"):
                    args[k] = v + " (changed)"
    assert f.check(wrong) == "terminal state not reached"
    read_only = ("get_weather", "lookup_stock", "convert_currency", "calculator", "search_contacts", "get_time",
                 "get_distance", "translate_word", "find_restaurant")
    lookup = next(d for d in agent_docs if d.meta["task"]["kind"] == "single" and
                  d.meta["task"]["expected"][0]["name"] in read_only)
    skipped = copy.deepcopy(lookup)  # answered without calling the tool
    skipped.messages = [skipped.messages[0], skipped.messages[-1]]
    assert f.check(skipped) == "terminal state not reached"


def test_default_pipeline_counts_each_step():
    good = reference_samples("reasoning", 6, 1) + reference_samples("general", 4, 1)
    for d in good:
        d.meta.update(finish_reason="stop", enable_thinking=True)
    bad = [copy.deepcopy(good[0]) for _ in range(3)]
    bad[0].meta["finish_reason"] = "length"
    bad[1].messages[-1]["content"] = "The answer is \\boxed{-999}."
    bad[2].messages[-1]["content"] = "Paris Paris Paris Paris Paris Paris Paris Paris Paris Paris Paris Paris"
    bad[2].meta.update(verifier="reward", reference="The answer is 12.")
    kept, report = default_pipeline().run(good + bad)
    assert len(kept) == len(good)
    by = {r["filter"]: r for r in report}
    assert by["truncated"]["dropped"] == 1 and by["math_answer"]["dropped"] == 1
    assert by["repetitive"]["dropped"] + by["reward_model"]["dropped"] == 1
    assert [r["in"] for r in report] == sorted((r["in"] for r in report), reverse=True)
    assert all(r["in"] - r["kept"] == sum(r["reasons"].values()) for r in report)
    with pytest.raises(ValueError):
        FilterPipeline([TruncationFilter(), TruncationFilter()])


class ScriptedBackend:
    """Answers arithmetic prompts: right with a long reasoning for even-numbered prompts, right
    and short for odd ones; sample j of a request is wrong when j == 1."""

    name = "scripted"

    def __init__(self, answers):
        self.answers = answers
        self.calls = []

    def chat(self, requests, on_result=None):
        out = []
        for r in requests:
            q = r.messages[-1]["content"]
            self.calls.append((q, r.n))
            idx = self.answers[q][1]
            samples = []
            for j in range(r.n):
                offset = (r.seed or 0) % 100 + j
                ans = self.answers[q][0] if offset % 7 != 1 else "-1"
                reasoning = "step. " * (40 if idx % 2 == 0 else 2) + f"So it is {ans}."
                samples.append(ChatSample(content=f"The answer is \\boxed{{{ans}}}.", reasoning_content=reasoning,
                                          completion_tokens=len(reasoning.split())))
            out.append(ChatResult(samples))
        return out


def test_prompt_selection_and_response_scaling():
    prompts = prompt_samples("reasoning", 10, 2)
    answers = {p.messages[-1]["content"]: (p.meta["answer"], i) for i, p in enumerate(prompts)}
    backend = ScriptedBackend(answers)
    config = RejectionConfig(first_pass=1, k=4, keep_fraction=0.5)
    accepted, report = rejection_sample(prompts, backend, default_pipeline(), config)
    assert report["prompts"] == 10 and report["selected_prompts"] == 5 and report["dropped_short_prompts"] == 5
    long_prompts = {p.id for i, p in enumerate(prompts) if i % 2 == 0}
    assert {c.meta["prompt_id"] for c in accepted} <= long_prompts
    assert report["scaling"]["responses"] == 5 * 3  # k - first_pass more for each selected prompt
    assert all(c.meta["answer"] in c.messages[-1]["content"] for c in accepted)
    assert report["accepted"] == len(accepted) <= 5 * 4
    assert len({c.id for c in accepted}) == len(accepted)
    # selection alone: the longest half, reproducibly
    cands = [Document(text="", id=f"c{i}", meta={"prompt_id": f"p{i % 4}", "completion_tokens": i % 4 * 10})
             for i in range(8)]
    assert select_prompts(cands, 0.5) == ["p3", "p2"]
