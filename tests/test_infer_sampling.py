"""Sampling parameters, filters, penalties and the inverse-CDF sampler."""

import pytest
import torch

from glm45.infer import SamplingParams, SamplingParamsError
from glm45.infer.sampling import (RandomStreams, SamplingBatch, apply_penalties, filtered_probs, sample,
                                  sample_from_probs)

CPU = torch.device("cpu")


@pytest.mark.parametrize("bad, match", [
    (dict(max_tokens=0), "max_tokens"), (dict(temperature=-0.1), "temperature"), (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.5), "top_p"), (dict(top_k=-2), "top_k"), (dict(min_p=1.5), "min_p"),
    (dict(repetition_penalty=0.0), "repetition_penalty"), (dict(presence_penalty=3.0), "presence_penalty"),
    (dict(frequency_penalty=-2.5), "frequency_penalty"), (dict(stop=[""]), "stop"),
    (dict(stop_token_ids=[-1]), "stop_token_ids"), (dict(seed=1.5), "seed"), (dict(logprobs=-1), "logprobs"),
    (dict(logprobs=50), "logprobs"), (dict(n=0), "n"), (dict(temperature=float("nan")), "temperature"),
    (dict(max_tokens=True), "max_tokens"),
])
def test_invalid_params_raise_named_errors(bad, match):
    with pytest.raises(SamplingParamsError, match=match):
        SamplingParams(**bad)
    assert issubclass(SamplingParamsError, ValueError)


def test_param_conveniences():
    p = SamplingParams(stop="END", top_k=-1, seed=5, n=3)
    assert p.stop == ["END"] and p.top_k == 0
    assert p.single(2).seed == 7 and p.single(2).n == 1
    assert SamplingParams(temperature=0).greedy and not SamplingParams().uses_filters


def batch_of(**kw):
    return SamplingBatch.build([SamplingParams(**kw)], CPU)


def test_filters_keep_the_right_tokens():
    logits = torch.log(torch.tensor([[0.05, 0.4, 0.1, 0.3, 0.15]]))
    p = filtered_probs(logits, batch_of(top_k=2))
    assert torch.allclose(p, torch.tensor([[0, 0.4 / 0.7, 0, 0.3 / 0.7, 0]]))
    # top-p 0.8: 0.4 + 0.3 = 0.7 < 0.8, so 0.15 joins; 0.85 >= 0.8 stops there.
    p = filtered_probs(logits, batch_of(top_p=0.8))
    assert torch.allclose(p, torch.tensor([[0, 0.4, 0, 0.3, 0.15]]) / 0.85)
    p = filtered_probs(logits, batch_of(min_p=0.5))  # keep tokens with prob >= 0.5 * 0.4
    assert torch.allclose(p, torch.tensor([[0, 0.4, 0, 0.3, 0]]) / 0.7)
    p = filtered_probs(logits, batch_of(temperature=0.5))
    assert torch.allclose(p, torch.softmax(logits / 0.5, -1))
    p = filtered_probs(logits, batch_of(temperature=0.0))
    assert p.tolist() == [[0, 1, 0, 0, 0]]


def test_mixed_rows_each_use_their_own_parameters():
    logits = torch.randn(3, 50)
    params = [SamplingParams(temperature=0.0), SamplingParams(top_k=3), SamplingParams(temperature=2.0)]
    p = filtered_probs(logits, SamplingBatch.build(params, CPU))
    assert p[0].argmax() == logits[0].argmax() and p[0].max() == 1.0
    assert (p[1] > 0).sum() == 3
    assert torch.allclose(p[2], torch.softmax(logits[2] / 2, -1))
    toks = sample(logits, SamplingBatch.build(params, CPU), torch.rand(3))
    assert toks[0] == logits[0].argmax() and p[1, toks[1]] > 0


def test_inverse_cdf_never_picks_zero_probability_tokens():
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.5, 0.0]]).expand(5, 5)
    u = torch.tensor([1e-12, 0.25, 0.5, 0.75, 1.0])
    assert sample_from_probs(probs, u).tolist() == [1, 1, 1, 3, 3]


def test_sampling_frequencies_follow_the_distribution():
    probs = torch.tensor([[0.1, 0.6, 0.3]])
    rs = RandomStreams(0)
    u = rs.uniforms([None] * 20000)[:, 0]
    toks = sample_from_probs(probs.expand(20000, 3), u)
    freq = torch.bincount(toks, minlength=3).float() / 20000
    assert torch.allclose(freq, probs[0], atol=0.015)
    assert (u > 0).all() and (u <= 1).all()


def test_seeded_streams_are_independent_of_the_batch():
    rs = RandomStreams(0)
    a = rs.uniforms([rs.generator_for(9)], 3)
    b = rs.uniforms([None, rs.generator_for(9), None], 3)
    assert torch.equal(a[0], b[1])


def test_penalties():
    logits = torch.tensor([[2.0, -2.0, 1.0, 0.5]])
    params = [SamplingParams(repetition_penalty=2.0, presence_penalty=0.5, frequency_penalty=0.25)]
    counts = torch.tensor([[0.0, 0.0, 2.0, 0.0]])
    seen = torch.tensor([[True, True, True, False]])  # tokens 0 and 1 only in the prompt
    out = apply_penalties(logits, params, counts, seen)
    # rep: 2 -> 1, -2 -> -4, 1 -> 0.5; token 2 also: -0.25*2 - 0.5 -> -0.5; token 3 untouched.
    assert torch.allclose(out, torch.tensor([[1.0, -4.0, -0.5, 0.5]]))
    neutral = apply_penalties(logits, [SamplingParams()], counts, seen)
    assert torch.equal(neutral, logits)
