"""The inference engine: KV cache, greedy equivalence, continuous batching, limits, scoring."""

import pytest
import torch
import transformers

from glm45.infer import Engine, InferenceError, SamplingParams
from glm45.infer.kv_cache import KVCache
from glm45.model import GLM45ForCausalLM
from helpers_model import randomize, tiny_config

GREEDY = dict(temperature=0.0, ignore_eos=True)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return randomize(GLM45ForCausalLM(tiny_config()), seed=11).eval()


def prompts(lengths, seed=0, vocab=512):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(1, vocab, (n,), generator=g).tolist() for n in lengths]


def greedy_reference(model, prompt, n):
    """Step-by-step argmax of full (cache-free) forwards."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt):]


def test_cached_logits_equal_full_forward_logits(model):
    """Prefill a ragged batch into the cache, then decode with rows at different positions."""
    cfg = model.config
    seqs = prompts([9, 4, 13], seed=1)
    extra = prompts([5, 5, 5], seed=2)
    cache = KVCache(cfg.num_hidden_layers, 4, cfg.num_key_value_heads, cfg.head_dim, 32, torch.float32, "cpu")
    with torch.no_grad():
        for row, s in enumerate(seqs):  # prefill rows 0..2 one by one
            cb = cache.batch(row, [0], len(s))
            out = model(torch.tensor([s]), position_ids=cb.position_ids, attn_mask=cb.mask, cache=cb)
            assert torch.allclose(out.logits[0], model(torch.tensor([s])).logits[0], atol=1e-5)
        lengths = [len(s) for s in seqs]
        for step in range(5):  # one new token per row per step, rows at different positions
            new = [e[step] for e in extra]
            cb = cache.batch(0, lengths, 1)
            assert cb.mask is not None
            out = model(torch.tensor(new)[:, None], position_ids=cb.position_ids, attn_mask=cb.mask, cache=cb)
            for row in range(3):
                full = model(torch.tensor([seqs[row] + extra[row][:step + 1]])).logits[0, -1]
                assert torch.allclose(out.logits[row, 0], full, atol=1e-5)
            lengths = [n + 1 for n in lengths]
        # Two tokens at once from different starts (the speculative verify shape).
        cb = cache.batch(0, lengths, 2)
        two = torch.tensor([[3, 4], [5, 6], [7, 8]])
        out = model(two, position_ids=cb.position_ids, attn_mask=cb.mask, cache=cb)
        for row in range(3):
            full = model(torch.tensor([seqs[row] + extra[row] + two[row].tolist()])).logits[0, -2:]
            assert torch.allclose(out.logits[row], full, atol=1e-5)


def test_greedy_equals_full_forward_argmax_in_a_ragged_batch(model):
    ps = prompts([7, 1, 12, 3, 9], seed=3)
    engine = Engine(model, max_batch_size=3, max_seq_len=64)  # 5 prompts, 3 rows: requests queue and refill
    results = engine.generate(ps, SamplingParams(max_tokens=10, **GREEDY))
    for p, r in zip(ps, results):
        assert r.prompt_token_ids == p
        assert r.token_ids == greedy_reference(model, p, 10)
        assert r.finish_reason == "length"
        assert r.stats["generated_tokens"] == 10 and r.stats["tokens_per_forward"] == 1.0
    assert engine.stats()["running"] == 0 and not engine.has_unfinished()


def test_greedy_equals_transformers_generate(model, tmp_path):
    model.save_pretrained(tmp_path / "ckpt")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "ckpt", dtype=torch.float32).eval()
    ps = prompts([6, 6], seed=4)
    with torch.no_grad():
        ref = hf.generate(torch.tensor(ps), attention_mask=torch.ones(2, 6, dtype=torch.long), max_new_tokens=12,
                          min_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0)
    results = Engine(model, max_batch_size=2, max_seq_len=64).generate(ps, SamplingParams(max_tokens=12, **GREEDY))
    assert [r.token_ids for r in results] == ref[:, 6:].tolist()


def test_requests_join_and_leave_between_steps(model):
    engine = Engine(model, max_batch_size=2, max_seq_len=64)
    a, b, c = prompts([5, 8, 3], seed=5)
    ra = engine.add_request(a, SamplingParams(max_tokens=3, **GREEDY))
    rb = engine.add_request(b, SamplingParams(max_tokens=8, **GREEDY))
    tokens = {ra: [], rb: []}
    finished = {}
    step = 0
    while engine.has_unfinished():
        outs = engine.step()
        step += 1
        if step == 2:  # c waits for a free row: a finishes at step 3
            rc = engine.add_request(c, SamplingParams(max_tokens=4, **GREEDY))
            tokens[rc] = []
        for o in outs:
            tokens[o.request_id] += o.new_token_ids
            assert o.num_generated_tokens == len(tokens[o.request_id])
            if o.finished:
                finished[o.request_id] = step
                assert o.result.token_ids == tokens[o.request_id]
        assert engine.scheduler.num_running <= 2
    assert tokens[ra] == greedy_reference(model, a, 3)
    assert tokens[rb] == greedy_reference(model, b, 8)
    assert tokens[rc] == greedy_reference(model, c, 4)
    assert finished[ra] < finished[rc]


def test_abort_frees_the_row_and_reports(model):
    engine = Engine(model, max_batch_size=1, max_seq_len=64)
    a, b = prompts([4, 4], seed=6)
    ra = engine.add_request(a, SamplingParams(max_tokens=50, **GREEDY))
    rb = engine.add_request(b, SamplingParams(max_tokens=3, **GREEDY))
    engine.step()
    assert engine.scheduler.num_running == 1 and engine.scheduler.num_waiting == 1
    assert engine.abort(ra) and not engine.abort(ra) and not engine.abort("nope")
    assert engine.scheduler.num_running == 0
    outs = engine.step()
    aborted = [o for o in outs if o.request_id == ra]
    assert aborted and aborted[0].finished and aborted[0].finish_reason == "abort"
    got = []
    while engine.has_unfinished():
        got += [t for o in engine.step() if o.request_id == rb for t in o.new_token_ids]
    got = [t for o in outs if o.request_id == rb for t in o.new_token_ids] + got
    assert got == greedy_reference(model, b, 3)


def test_stop_tokens_and_length_limits(model):
    p = prompts([6], seed=7)[0]
    free = greedy_reference(model, p, 8)
    stop_at = free[4]
    first = free.index(stop_at)
    engine = Engine(model, max_batch_size=2, max_seq_len=64)
    r = engine.generate([p], SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True,
                                            stop_token_ids=[stop_at]))[0]
    assert r.finish_reason == "stop" and r.token_ids == free[:first + 1]  # the stop token is kept
    # The config's eos ids stop generation unless ignore_eos.
    model.config.eos_token_id = [stop_at]
    try:
        r = Engine(model, max_seq_len=64).generate([p], SamplingParams(max_tokens=8, temperature=0.0))[0]
        assert r.finish_reason == "stop" and r.token_ids == free[:first + 1]
    finally:
        model.config.eos_token_id = [0, 7, 9]
    # max_seq_len bounds prompt + generated.
    r = Engine(model, max_seq_len=10).generate([p], SamplingParams(max_tokens=50, **GREEDY))[0]
    assert r.finish_reason == "length" and len(r.token_ids) == 4 and r.token_ids == free[:4]


def test_bad_requests_raise_clear_errors(model):
    engine = Engine(model, max_seq_len=16)
    with pytest.raises(InferenceError, match="empty"):
        engine.add_request([])
    with pytest.raises(InferenceError, match="outside the vocabulary"):
        engine.add_request([1, 99999])
    with pytest.raises(InferenceError, match="max_seq_len"):
        engine.add_request(list(range(1, 17)))
    with pytest.raises(InferenceError, match="tokenizer"):
        engine.add_request("text needs a tokenizer")
    with pytest.raises(InferenceError, match="stop strings need a tokenizer"):
        engine.add_request([1, 2], SamplingParams(stop=["x"]))
    with pytest.raises(InferenceError, match="n = 1"):
        engine.add_request([1, 2], SamplingParams(n=2))
    engine.add_request([1, 2], request_id="dup")
    with pytest.raises(InferenceError, match="already in use"):
        engine.add_request([3], request_id="dup")
    with pytest.raises(InferenceError, match="MTP"):
        Engine(GLM45ForCausalLM(tiny_config(num_nextn_predict_layers=0)), speculative=True)


def test_logprobs_and_score_match_full_forward(model):
    p = prompts([5], seed=8)[0]
    engine = Engine(model, max_seq_len=64)
    r = engine.generate([p], SamplingParams(max_tokens=6, temperature=0.8, seed=3, logprobs=3, ignore_eos=True))[0]
    with torch.no_grad():
        logp = model(torch.tensor([p + r.token_ids])).logits[0].log_softmax(-1)
    for i, (tok, entry) in enumerate(zip(r.token_ids, r.logprobs)):
        row = logp[len(p) - 1 + i]
        assert entry["token_id"] == tok
        assert entry["logprob"] == pytest.approx(row[tok].item(), abs=1e-4)
        top_ids = [t for t, _ in entry["top"]]
        assert top_ids == row.topk(3).indices.tolist()
    scored = engine.score(p, r.token_ids)
    assert scored == pytest.approx([e["logprob"] for e in r.logprobs], abs=1e-4)
    batch = engine.score_batch([(p, r.token_ids), (p[:2], r.token_ids[:2])])
    assert batch[0] == pytest.approx(scored, abs=1e-5) and len(batch[1]) == 2


def test_seeded_sampling_is_reproducible_and_n_gives_samples(model):
    p = prompts([4], seed=9)[0]
    engine = Engine(model, max_batch_size=4, max_seq_len=64)
    params = SamplingParams(max_tokens=8, temperature=1.0, seed=123, n=3, ignore_eos=True)
    r1 = engine.generate([p], params)[0]
    r2 = engine.generate([p, p[:2]], params)[0]  # other requests in the batch do not change it
    assert [s.token_ids for s in r1.samples] == [s.token_ids for s in r2.samples]
    assert len(r1.samples) == 3 and r1.token_ids == r1.samples[0].token_ids
    assert len({tuple(s.token_ids) for s in r1.samples}) > 1


def test_update_weights_takes_model_or_checkpoint_keys(model, tmp_path):
    other = randomize(GLM45ForCausalLM(tiny_config()), seed=12).eval()
    p = prompts([5], seed=10)[0]
    engine = Engine(randomize(GLM45ForCausalLM(tiny_config()), seed=11).eval(), max_seq_len=64)
    before = engine.generate([p], SamplingParams(max_tokens=6, **GREEDY))[0].token_ids
    assert before == greedy_reference(model, p, 6)
    engine.update_weights(other)
    assert engine.generate([p], SamplingParams(max_tokens=6, **GREEDY))[0].token_ids == greedy_reference(other, p, 6)
    # On-disk names (per-expert keys, MTP as model.layers.N) work too.
    from glm45.checkpoint.hf import memory_to_disk

    disk = {k: v for name, t in model.state_dict().items() for k, v in memory_to_disk(name, t, model.config)}
    engine.update_weights(disk)
    assert engine.generate([p], SamplingParams(max_tokens=6, **GREEDY))[0].token_ids == before
    with pytest.raises(ValueError, match="missing"):
        engine.update_weights({"lm_head.weight": model.lm_head.weight})
    with pytest.raises(ValueError, match="match no model weight"):
        engine.update_weights({"nonsense.weight": torch.zeros(1)}, strict=False)


def test_bfloat16_engine_runs_and_tracks_fp32(model):
    p = prompts([6], seed=13)[0]
    bf = randomize(GLM45ForCausalLM(tiny_config()), seed=11).eval().to(torch.bfloat16)
    engine = Engine(bf, max_seq_len=64)
    assert engine.cache.k[0].dtype == torch.bfloat16
    r = engine.generate([p], SamplingParams(max_tokens=5, logprobs=0, **GREEDY))[0]
    with torch.no_grad():
        ref = model(torch.tensor([p + r.token_ids])).logits[0, len(p) - 1:-1].log_softmax(-1)
    lp = torch.tensor([e["logprob"] for e in r.logprobs])
    assert torch.allclose(lp, ref.gather(1, torch.tensor(r.token_ids)[:, None]).squeeze(1), atol=0.1)


def test_generate_keeps_other_requests_outputs_for_step(model):
    engine = Engine(model, max_batch_size=4, max_seq_len=64)
    a, b = prompts([5, 6], seed=14)
    ra = engine.add_request(a, SamplingParams(max_tokens=20, **GREEDY))
    r = engine.generate([b], SamplingParams(max_tokens=3, **GREEDY))[0]
    assert r.token_ids == greedy_reference(model, b, 3)
    got = []
    while engine.has_unfinished():
        got += [t for o in engine.step() if o.request_id == ra for t in o.new_token_ids]
    assert got == greedy_reference(model, a, 20)
