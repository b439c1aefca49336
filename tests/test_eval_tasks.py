"""Task files, the registry, and log-likelihood tasks through the runner."""

from __future__ import annotations

import json
import math

import pytest

from glm45.eval.backend import ChatResult, ChatSample, EvalError, LoglikelihoodResult
from glm45.eval.kinds import Sampling
from glm45.eval.runner import evaluate
from glm45.eval.tasks import list_tasks, register_task, resolve_task


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + "\n")  # a trailing blank line is fine
    return path


def test_kind_colon_path_and_ids(tmp_path):
    path = write_jsonl(tmp_path / "aime.jsonl",
                       [{"problem": "a", "answer": 1}, {"id": 7, "problem": "b", "answer": "2"}])
    task = resolve_task(f"math:{path}")
    assert task.name == "aime" and task.kind.name == "math" and task.source == str(path)
    assert [r["id"] for r in task.records] == ["1", "7"]


def test_bare_path_takes_the_kind_from_records(tmp_path):
    path = write_jsonl(tmp_path / "mc.jsonl", [{"kind": "choice", "question": "q", "options": ["a", "b"], "answer": 0}])
    assert resolve_task(str(path)).kind.name == "choice"
    mixed = write_jsonl(tmp_path / "mixed.jsonl", [{"problem": "a", "answer": 1}])
    with pytest.raises(EvalError, match="give the kind as KIND:"):
        resolve_task(str(mixed))


@pytest.mark.parametrize("records, message", [
    ([{"problem": "a", "answer": 1, "kind": "choice"}], "differs from the task's kind"),
    ([{"id": "x", "problem": "a", "answer": 1}, {"id": "x", "problem": "b", "answer": 2}], "duplicate id 'x'"),
    ([{"problem": 3, "answer": 1}], "field 'problem' must be str"),
    ([{"problem": "a", "answer": True}], "field 'answer'"),
])
def test_bad_records_name_file_and_line(tmp_path, records, message):
    path = write_jsonl(tmp_path / "t.jsonl", records)
    with pytest.raises(EvalError, match=message) as info:
        resolve_task(f"math:{path}")
    assert str(path) in str(info.value)


def test_bad_files(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"problem": "a", "answer": 1}\n{oops\n')
    with pytest.raises(EvalError, match=r"bad.jsonl:2: not valid JSON"):
        resolve_task(f"math:{bad}")
    with pytest.raises(EvalError, match="does not exist"):
        resolve_task(f"math:{tmp_path / 'missing.jsonl'}")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(EvalError, match="no records"):
        resolve_task(f"math:{empty}")
    with pytest.raises(EvalError, match="unknown task 'nope'"):
        resolve_task("nope")


def test_registration_is_one_line(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [{"problem": "a", "answer": 1}])
    register_task("test_reg_file", "math", path, description="from a file", replace=True)
    register_task("test_reg_fn", "choice", lambda: [{"question": "q", "options": ["a", "b"], "answer": "b"}],
                  replace=True)
    assert list_tasks()["test_reg_file"] == ("math", "from a file")
    assert resolve_task("test_reg_file").records[0]["problem"] == "a"
    fn_task = resolve_task("test_reg_fn")
    assert fn_task.kind.name == "choice" and fn_task.records[0]["id"] == "1"
    with pytest.raises(EvalError, match="already registered"):
        register_task("test_reg_fn", "choice", path)
    with pytest.raises(EvalError, match="unknown task kind"):
        register_task("x", "essay", path)
    assert "humaneval" in list_tasks()


class LoglikModel:
    """A test double with the log-likelihood capability: fixed nats per byte of continuation,
    fewer when the continuation is the 'right' one."""

    name = "loglik-double"

    def __init__(self):
        self.seen = []

    def chat(self, requests, on_result=None):
        return [ChatResult([ChatSample("x")] * r.n) for r in requests]

    def loglikelihood(self, requests):
        self.seen += list(requests)
        out = []
        for r in requests:
            per_byte = 0.5 if r.continuation.strip().startswith("right") else 2.0
            n_bytes = len(r.continuation.encode())
            out.append(LoglikelihoodResult(logprob=-per_byte * n_bytes, n_tokens=max(1, n_bytes // 2)))
        return out


def test_likelihood_tasks_through_the_runner(tmp_path):
    text = write_jsonl(tmp_path / "heldout.jsonl", [{"text": "right héllo"}, {"text": "wrong"}])
    mc = write_jsonl(tmp_path / "mc.jsonl", [
        {"context": "Q1:", "choices": [" wrong", " right"], "answer": 1},
        {"context": "Q2:", "choices": [" right but very long", " wrong"], "answer": 0},
        {"context": "Q3:", "choices": [" right", " wrong"], "answer": 1}])
    model = LoglikModel()
    results = evaluate(model, [resolve_task(f"perplexity:{text}"), resolve_task(f"loglik_choice:{mc}")],
                       tmp_path / "out", show_progress=False)
    ppl = results["tasks"]["heldout"]["metrics"]
    n_bytes = len("right héllo".encode()) + len(b"wrong")
    nats = 0.5 * len("right héllo".encode()) + 2.0 * len(b"wrong")
    assert ppl["bytes"] == n_bytes and ppl["bits_per_byte"] == pytest.approx(nats / (math.log(2) * n_bytes))
    assert ppl["loss"] == pytest.approx(nats / ppl["tokens"])
    assert results["tasks"]["mc"]["metrics"] == {"acc": pytest.approx(2 / 3), "acc_norm": pytest.approx(2 / 3)}
    assert model.seen[0].context == "" and model.seen[2].context == "Q1:"
    assert "| heldout | perplexity | 2 | loss |" in (tmp_path / "out" / "summary.md").read_text()


def test_likelihood_tasks_need_the_capability(tmp_path):
    class ChatOnly:
        name = "chat-only"

        def chat(self, requests, on_result=None):
            return []

    text = write_jsonl(tmp_path / "heldout.jsonl", [{"text": "abc"}])
    with pytest.raises(EvalError, match="cannot"):
        evaluate(ChatOnly(), [resolve_task(f"perplexity:{text}")], tmp_path / "o", sampling=Sampling(),
                 show_progress=False)
