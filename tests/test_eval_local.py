"""`glm45 eval --model DIR`: the local-engine backend (chat and log-likelihood), the CLI on a tiny
checkpoint, parity with the OpenAI path through a real `glm45 serve`, and bad model directories."""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest_serve import TOOL, make_backend as serve_backend, scripted_model, start_server, tiny_checkpoint, \
    tokenizer, tool_chain

from glm45.cli import main as glm45_main
from glm45.eval.backend import EvalError, LoglikelihoodRequest, supports_loglikelihood
from glm45.eval.cache import CachedBackend
from glm45.eval.kinds import Sampling
from glm45.eval.local import LocalBackend, make_backend, score_windows
from glm45.eval.openai_backend import OpenAIBackend
from glm45.eval.runner import evaluate
from glm45.eval.tasks import make_task, resolve_task
from glm45.infer import Engine
from glm45.model import GLM45ForCausalLM


@pytest.fixture(scope="module")
def backend() -> LocalBackend:
    return make_backend(tiny_checkpoint(), device="cpu")  # the server in the parity tests runs on the CPU


def _direct(model, ids: list[int], start: int) -> tuple[float, bool]:
    """Sum of log-probabilities of ids[start:] and whether each was the argmax, one plain forward."""
    with torch.no_grad():
        logp = model(torch.tensor([ids])).logits[0].float().log_softmax(-1)
    targets = torch.tensor(ids[start:])
    rows = logp[start - 1:len(ids) - 1]
    return float(rows.gather(1, targets[:, None]).sum()), bool((rows.argmax(-1) == targets).all())


def test_cli_evaluates_a_local_checkpoint(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["eval", "--model", tiny_checkpoint(), "--tasks", "arithmetic,tool_calls", "--limit", "4",
            "--max-tokens", "12", "--out", str(out), "--quiet"]
    assert glm45_main(args) == 0
    assert "| arithmetic | math | 4 | avg@1 |" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert results["backend"] == f"local:{tiny_checkpoint()}"
    for name in ("arithmetic", "tool_calls"):
        task = results["tasks"][name]
        assert task["n_items"] == 4 and len(task["items"]) == 4
        for item in task["items"]:
            assert 0.0 <= item["score"] <= 1.0 and len(item["samples"]) == 1
            sample = item["samples"][0]
            assert 0.0 <= sample["score"] <= 1.0 and isinstance(sample["content"], str)
            assert 0 <= sample["completion_tokens"] <= 12  # 0: a tool prompt that fills the tiny context
            assert sample["finish_reason"] in ("stop", "length", "tool_calls")
    assert results["tasks"]["arithmetic"]["items"][0]["id"].startswith("arith-test-0-")
    summary = (out / "summary.md").read_text()
    assert "| arithmetic | math | 4 |" in summary and "| tool_calls | function_call | 4 |" in summary
    assert glm45_main(args) == 0  # the rerun is answered from OUT/cache
    assert "8 hits, 0 generated" in capsys.readouterr().out


def test_cli_base_model_tasks_on_a_local_checkpoint(tmp_path, capsys):
    mc = tmp_path / "mc.jsonl"
    mc.write_text("\n".join(json.dumps(r) for r in [
        {"context": "Question: What is 2 + 3?\nAnswer:", "choices": [" 5", " 6", " 23"], "answer": 0},
        {"context": "The capital of France is", "choices": [" Paris", " Rome"], "answer": 0}]) + "\n")
    out = tmp_path / "out"
    assert glm45_main(["eval", "--model", tiny_checkpoint(), "--tasks", f"heldout_text,loglik_choice:{mc}",
                       "--limit", "3", "--out", str(out), "--quiet"]) == 0  # through the response cache
    results = json.loads((out / "results.json").read_text())
    text = results["tasks"]["heldout_text"]
    items = text["items"]
    tok = tokenizer()
    records = resolve_task("heldout_text").records[:3]
    assert [it["tokens"] for it in items] == [len(tok.encode(r["text"])) for r in records]
    assert [it["bytes"] for it in items] == [len(r["text"].encode()) for r in records]
    m = text["metrics"]
    nats = -sum(it["logprob"] for it in items)
    assert m["loss"] == pytest.approx(nats / m["tokens"]) and m["perplexity"] == pytest.approx(math.exp(m["loss"]))
    assert m["bits_per_byte"] == pytest.approx(nats / math.log(2) / m["bytes"]) and m["loss"] > 0
    choice = results["tasks"]["mc"]
    assert choice["n_items"] == 2 and all(len(it["logliks"]) == len(r["choices"]) for it, r in
                                          zip(choice["items"], resolve_task(f"loglik_choice:{mc}").records))
    assert all(it["score"] in (0.0, 1.0) and all(ll < 0 for ll in it["logliks"]) for it in choice["items"])
    assert "| heldout_text | perplexity | 3 | loss |" in capsys.readouterr().out


def test_loglikelihood_matches_a_direct_forward(backend):
    model, tok = backend.engine.model, backend.engine.tokenizer
    eos = tok.eos_token_id
    cases = [("", "def add(a, b):\n    return a + b\n"),
             ("Question: What is 2 + 3?\nAnswer:", " 5"),
             ("The capital of France is", " Paris, a city on the Seine with many bridges and museums."),
             ("x", "y")]
    results = backend.loglikelihood([LoglikelihoodRequest(c, x) for c, x in cases])  # one padded batch
    for (context, continuation), got in zip(cases, results):
        context_ids = tok.encode(context)
        ids = [eos] + tok.encode(context + continuation)
        assert ids[1:1 + len(context_ids)] == context_ids  # these cases split cleanly at the boundary
        want, greedy = _direct(model, ids, 1 + len(context_ids))
        assert got.n_tokens == len(ids) - 1 - len(context_ids)
        assert got.logprob == pytest.approx(want, rel=1e-5, abs=1e-4) and got.is_greedy == greedy
    # the model's own argmax continuation is greedy
    with torch.no_grad():
        best = int(model(torch.tensor([[eos] + tok.encode("The capital of France is")])).logits[0, -1].argmax())
    text = tok.decode([best])
    assert tok.encode("The capital of France is" + text)[-1] == best  # it round-trips as one token
    assert backend.loglikelihood([LoglikelihoodRequest("The capital of France is", text)])[0].is_greedy
    with pytest.raises(EvalError, match="no tokens"):
        backend.loglikelihood([LoglikelihoodRequest("a", "")])


def test_long_texts_are_scored_in_windows(backend):
    engine = Engine(backend.engine.model, backend.engine.tokenizer, max_seq_len=16, max_batch_size=1)
    short = LocalBackend(engine, max_batch_tokens=40)  # several forwards, each a padded batch
    texts = ["One two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen.",
             "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho"]
    results = short.loglikelihood([LoglikelihoodRequest("", t) for t in texts])
    tok = engine.tokenizer
    for text, got in zip(texts, results):
        ids = tok.encode(text)
        windows = score_windows([tok.eos_token_id], ids, 16)
        assert len(windows) > 2 and got.n_tokens == len(ids)
        want = sum(_direct(engine.model, w, s)[0] for w, s in windows)
        assert got.logprob == pytest.approx(want, rel=1e-5, abs=1e-4)


@pytest.mark.parametrize("n_context,n_cont,max_len", [(1, 5, 8), (1, 40, 8), (30, 10, 16), (3, 1, 2), (5, 100, 33)])
def test_score_windows_score_every_token_once(n_context, n_cont, max_len):
    context, cont = list(range(100, 100 + n_context)), list(range(n_context))
    windows = score_windows(context, cont, max_len)
    scored = [t for ids, start in windows for t in ids[start:]]
    assert scored == cont  # every continuation token once, in order
    seq, end = context + cont, n_context
    for ids, start in windows:
        assert 1 <= start < len(ids) <= max_len
        end += len(ids) - start
        assert seq[end - len(ids):end] == ids  # a slice of the sequence ending at its last scored token
        if end > len(ids):
            assert len(ids) == max_len  # context is only cut short when the window is full
    if n_context + n_cont <= max_len:
        assert windows == [(seq, n_context)]
    with pytest.raises(EvalError):
        score_windows([], cont, max_len)


def test_the_response_cache_keeps_the_loglikelihood_capability(backend, tmp_path):
    cached = CachedBackend(backend, tmp_path / "cache")
    assert supports_loglikelihood(cached)
    request = LoglikelihoodRequest("a", " b")
    assert cached.loglikelihood([request]) == backend.loglikelihood([request])

    class ChatOnly:
        name = "chat-only"

        def chat(self, requests, on_result=None):
            return []

    assert not supports_loglikelihood(CachedBackend(ChatOnly(), tmp_path / "c2"))


def _prompt(task, record) -> dict:
    prompt = task.kind.prepare(record, None)
    return {"messages": prompt.messages, "tools": prompt.tools}


def _samples(results: dict) -> dict:
    return {name: [(it["id"], it["score"], it["samples"]) for it in t["items"]] for name, t in results["tasks"].items()}


def _run_both(local: LocalBackend, engine_backend, tasks, tmp_path, sampling: Sampling) -> tuple[dict, dict]:
    server = start_server(engine_backend)
    try:
        with OpenAIBackend(server.base_url + "/v1", concurrency=4) as remote:
            over_http = evaluate(remote, tasks, tmp_path / "http", sampling=sampling, show_progress=False)
    finally:
        server.stop()
    in_process = evaluate(local, tasks, tmp_path / "local", sampling=sampling, show_progress=False)
    return _samples(over_http), _samples(in_process)


def test_openai_path_and_local_path_score_the_same(backend, tmp_path):
    """The same checkpoint, greedy, scored through `glm45 serve` over HTTP and in process."""
    sampling = Sampling(temperature=0.0, max_tokens=12)
    tasks = []
    for task in (resolve_task("arithmetic"), resolve_task("tool_calls")):
        # the server refuses a prompt that leaves no room for max_tokens; the tiny model's context
        # (1024) is nearly filled by a tool prompt, so take items that fit
        fits = [r for r in task.records if len(backend.engine.prompt_ids(_prompt(task, r))) + 12 <= 1024]
        tasks.append(make_task(task.name, task.kind.name, enumerate(fits[:3], 1), task.source))
    over_http, in_process = _run_both(backend, serve_backend(), tasks, tmp_path, sampling)
    assert over_http == in_process
    assert [len(v) for v in in_process.values()] == [3, 3]
    assert any(s["content"] for v in in_process.values() for _, _, samples in v for s in samples)


def test_a_scripted_tool_call_scores_the_same_through_both_paths(tmp_path):
    """A model that always writes `find(city=Oslo)`: full marks both ways, with the same records."""
    model = scripted_model(tool_chain())
    local = LocalBackend(Engine(model, tokenizer(), max_seq_len=512))
    records = [{"id": "oslo", "question": "Where is it?", "tools": [TOOL],
                "ground_truth": [{"find": {"city": ["Oslo"]}}]},
               {"id": "none", "question": "Say hi.", "tools": [TOOL], "ground_truth": []}]
    task = make_task("scripted", "function_call", enumerate(records, 1), "<test>")
    sampling = Sampling(temperature=0.0, max_tokens=64)
    over_http, in_process = _run_both(local, serve_backend(model, max_seq_len=512), [task], tmp_path, sampling)
    assert over_http == in_process
    (oslo, none), = in_process.values()
    assert oslo[1] == 1.0 and none[1] == 0.0
    sample = oslo[2][0]
    assert sample["tool_calls"] == [{"name": "find", "arguments": {"city": "Oslo"}}]
    assert sample["finish_reason"] == "tool_calls" and sample["reasoning_content"] == "Hi there"


def test_bad_model_directories_are_clear_errors(tmp_path, capsys):
    base = ["eval", "--tasks", "arithmetic", "--out", str(tmp_path / "o"), "--quiet"]
    assert glm45_main(base + ["--model", str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert glm45_main(base + ["--model", str(empty)]) == 2
    err = capsys.readouterr().err
    assert "is not a glm45 checkpoint" in err and "config.json" in err and "model.safetensors" in err
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "tokenizer.json", "model.safetensors"):
        (broken / name).write_text("{not json")
    assert glm45_main(base + ["--model", str(broken)]) == 2
    assert "cannot load the checkpoint" in capsys.readouterr().err
    with pytest.raises(EvalError, match="no tokenizer.json"):
        make_backend(_without_tokenizer(tmp_path / "no-tok"))


def _without_tokenizer(path) -> str:
    GLM45ForCausalLM.from_pretrained(tiny_checkpoint()).save_pretrained(path)
    return str(path)
