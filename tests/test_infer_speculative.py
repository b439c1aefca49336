"""MTP speculative decoding: greedy identity, the output distribution under sampling, stats."""

import itertools

import pytest
import torch
from scipy.stats import chi2

from glm45.infer import Engine, SamplingParams
from glm45.infer.sampling import SamplingBatch, filtered_probs
from glm45.model import GLM45ForCausalLM
from helpers_model import randomize, tiny_config


@pytest.fixture(scope="module")
def model():
    return randomize(GLM45ForCausalLM(tiny_config()), seed=21).eval()


def test_speculative_greedy_equals_plain_greedy_with_batching(model):
    g = torch.Generator().manual_seed(0)
    ps = [torch.randint(1, 512, (n,), generator=g).tolist() for n in (3, 11, 6, 1, 8)]
    params = [SamplingParams(max_tokens=m, temperature=0.0, ignore_eos=True) for m in (14, 9, 17, 5, 12)]
    plain = Engine(model, max_batch_size=3, max_seq_len=64).generate(ps, params)
    spec_engine = Engine(model, max_batch_size=3, max_seq_len=64, speculative=True)
    spec = spec_engine.generate(ps, params)
    assert [r.token_ids for r in spec] == [r.token_ids for r in plain]
    assert [r.finish_reason for r in spec] == ["length"] * 5
    s = spec_engine.stats()
    assert s["drafted"] > 0 and 0 <= s["acceptance_rate"] <= 1
    assert s["tokens_per_forward"] == pytest.approx(1 + s["accepted"] / s["row_forwards"])


def test_a_perfect_draft_gives_two_tokens_per_forward():
    """With both heads fed an all-zero hidden state (zero final norms), main model and MTP layer
    both always predict token 0, so every draft is accepted."""
    m = GLM45ForCausalLM(tiny_config()).eval()
    with torch.no_grad():
        m.model.norm.weight.zero_()
        m.mtp.shared_head.norm.weight.zero_()
    r = Engine(m, speculative=True, max_seq_len=64).generate(
        [[5, 6, 7]], SamplingParams(max_tokens=9, temperature=0.0, ignore_eos=True))[0]
    assert r.token_ids == [0] * 9
    assert r.stats["acceptance_rate"] == 1.0
    assert r.stats["forwards"] == 5  # prefill + 4 verify forwards of 2 tokens each


def test_stop_inside_an_accepted_pair_drops_the_rest(model):
    g = torch.Generator().manual_seed(1)
    p = torch.randint(1, 512, (5,), generator=g).tolist()
    free = Engine(model, max_seq_len=64).generate([p], SamplingParams(max_tokens=12, temperature=0.0,
                                                                      ignore_eos=True))[0].token_ids
    for k in range(1, 12):
        stop = free[k]
        expect = free[:free.index(stop) + 1]
        r = Engine(model, max_seq_len=64, speculative=True).generate(
            [p], SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True, stop_token_ids=[stop]))[0]
        assert r.token_ids == expect and r.finish_reason == "stop"
        r = Engine(model, max_seq_len=64, speculative=True).generate(
            [p], SamplingParams(max_tokens=k, temperature=0.0, ignore_eos=True))[0]
        assert r.token_ids == free[:k] and r.finish_reason == "length"


def exact_sequence_probs(model, prompt, params, length):
    """P(t1..t_length) under the filtered sampling distribution, by enumeration."""
    V = model.config.vocab_size
    batch = SamplingBatch.build([params] * length, torch.device("cpu"))
    probs = {}
    with torch.no_grad():
        for seq in itertools.product(range(V), repeat=length - 1):
            logits = model(torch.tensor([prompt + list(seq)])).logits[0, len(prompt) - 1:]
            p = filtered_probs(logits, batch)  # row i: the distribution of token i + 1
            prefix = 1.0
            for i, t in enumerate(seq):
                prefix *= p[i, t].item()
            for t in range(V):
                probs[seq + (t,)] = prefix * p[-1, t].item()
    return probs


def chi2_pvalue(counts, probs, n):
    cells = [k for k, p in probs.items() if p * n >= 5]
    rest_p = 1.0 - sum(probs[k] for k in cells)
    rest_c = n - sum(counts.get(k, 0) for k in cells)
    stat = sum((counts.get(k, 0) - n * probs[k]) ** 2 / (n * probs[k]) for k in cells)
    dof = len(cells) - 1
    if rest_p * n >= 5:
        stat += (rest_c - n * rest_p) ** 2 / (n * rest_p)
        dof += 1
    return chi2.sf(stat, dof)


@pytest.mark.parametrize("sampling", [dict(temperature=1.0), dict(temperature=0.7, top_p=0.9, top_k=5)])
def test_speculative_sampling_keeps_the_output_distribution(sampling):
    """Sequences of 3 tokens from a vocabulary of 6: plain and speculative sampling both match the
    exact distribution (chi-square), with many drafts rejected (so resampling is exercised)."""
    cfg = tiny_config(vocab_size=6, eos_token_id=[0])
    m = randomize(GLM45ForCausalLM(cfg), seed=3).eval()
    with torch.no_grad():  # peaked, different main and MTP distributions
        m.lm_head.weight.mul_(10.0)
        m.mtp.shared_head.head.weight.normal_(0, 0.2)
    prompt = [1, 2, 3]
    params = SamplingParams(max_tokens=3, ignore_eos=True, seed=7, n=3000, **sampling)
    exact = exact_sequence_probs(m, prompt, params, 3)
    assert max(exact.values()) < 0.5  # not degenerate
    for speculative in (False, True):
        engine = Engine(m, max_batch_size=64, max_seq_len=16, speculative=speculative)
        result = engine.generate([prompt], params)[0]
        counts = {}
        for s in result.samples:
            counts[tuple(s.token_ids)] = counts.get(tuple(s.token_ids), 0) + 1
        assert chi2_pvalue(counts, exact, len(result.samples)) > 1e-3, (speculative, engine.stats())
        if speculative:
            rate = engine.stats()["acceptance_rate"]
            assert 0.1 < rate < 0.9, rate


def test_speculative_with_penalties_and_logprobs_runs(model):
    g = torch.Generator().manual_seed(2)
    ps = [torch.randint(1, 512, (n,), generator=g).tolist() for n in (4, 7)]
    params = SamplingParams(max_tokens=10, temperature=0.0, repetition_penalty=1.3, presence_penalty=0.5,
                            ignore_eos=True, logprobs=2)
    plain = Engine(model, max_seq_len=64).generate(ps, params)
    spec = Engine(model, max_seq_len=64, speculative=True).generate(ps, params)
    assert [r.token_ids for r in spec] == [r.token_ids for r in plain]
    for a, b in zip(plain, spec):
        assert [e["token_id"] for e in b.logprobs] == b.token_ids
        assert [e["logprob"] for e in b.logprobs] == pytest.approx([e["logprob"] for e in a.logprobs], abs=1e-4)


def test_speculative_decoding_fills_the_cache_exactly(model):
    """Verification writes two positions; a request may still use every position up to max_seq_len."""
    for max_len in (2, 3, 10):
        engine = Engine(model, max_seq_len=max_len, max_batch_size=2, speculative=True)
        results = engine.generate([[1] * (max_len - 1), [2]], SamplingParams(max_tokens=50, temperature=0.7,
                                                                             ignore_eos=True, seed=1))
        assert [len(r.token_ids) for r in results] == [1, max_len - 1]
        assert all(r.finish_reason == "length" for r in results)
