"""The compiled decode step (`Engine(compile=True)`): same tokens and logprobs as eager
decoding, one graph without breaks, with continuous batching, speculation and FP8 weights."""

import pytest
import torch
from torch._dynamo.utils import counters

from glm45.infer import Engine, SamplingParams, quantize_model_fp8
from glm45.model import GLM45ForCausalLM
from glm45.model.moe import Experts, compiled_gather_max_tokens
from helpers_model import randomize, tiny_config

GREEDY = dict(temperature=0.0, ignore_eos=True)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return randomize(GLM45ForCausalLM(tiny_config()), seed=5).eval()


def prompts(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(1, 512, (n,), generator=g).tolist() for n in lengths]


def test_compiled_decoding_equals_eager_decoding(model):
    """Rows of different lengths (each at its own cache position), then a single row: greedy
    tokens identical, logprobs within float rounding, and the decode step compiled whole."""
    ps = prompts([5, 11, 8])
    params = SamplingParams(max_tokens=12, logprobs=0, **GREEDY)
    eager = Engine(model, max_batch_size=3, max_seq_len=48).generate(ps, params)
    compiled = Engine(model, max_batch_size=3, max_seq_len=48, compile=True)
    counters.clear()
    batched = compiled.generate(ps, params)
    single = compiled.generate(ps[1], params)[0]
    assert not counters["graph_break"], dict(counters["graph_break"])
    assert counters["stats"]["unique_graphs"] >= 1
    assert [r.token_ids for r in batched] == [r.token_ids for r in eager]
    assert single.token_ids == eager[1].token_ids
    for got, want in zip(batched + [single], eager + [eager[1]]):
        torch.testing.assert_close(torch.tensor([lp["logprob"] for lp in got.logprobs]),
                                   torch.tensor([lp["logprob"] for lp in want.logprobs]), atol=1e-4, rtol=0)


def test_compiled_speculative_decoding_equals_plain_greedy(model):
    ps = prompts([7, 3], seed=1)
    params = SamplingParams(max_tokens=10, **GREEDY)
    plain = Engine(model, max_batch_size=2, max_seq_len=40).generate(ps, params)
    spec = Engine(model, max_batch_size=2, max_seq_len=40, speculative=True, compile=True)
    assert [r.token_ids for r in spec.generate(ps, params)] == [r.token_ids for r in plain]
    assert spec.stats()["drafted"] > 0


def test_compiled_fp8_decoding_equals_eager_fp8(model):
    import copy

    fp8 = quantize_model_fp8(copy.deepcopy(model))
    ps = prompts([6, 9], seed=2)
    params = SamplingParams(max_tokens=8, **GREEDY)
    eager = Engine(fp8, max_batch_size=2, max_seq_len=32).generate(ps, params)
    compiled = Engine(fp8, max_batch_size=2, max_seq_len=32, compile=True).generate(ps, params)
    assert [r.token_ids for r in compiled] == [r.token_ids for r in eager]


@pytest.mark.slow  # five decode shapes compile: ~30 s
def test_warm_up_compiles_every_decode_shape_and_resets_the_totals(model):
    """Batches on both sides of the experts' gather limit (16 tokens for the tiny model's 8
    experts, top 2), at one and at several positions, sizes the warm-up did not use among them
    (2 and 4 rows: the key/value heads are 2), compile nothing new."""
    cfg = model.config
    assert compiled_gather_max_tokens(cfg.n_routed_experts, cfg.num_experts_per_tok) == 16
    engine = Engine(model, max_batch_size=20, max_seq_len=40, compile=True)
    engine.warm_up()
    assert engine.stats()["requests"] == 0 and engine.stats()["generated_tokens"] == 0
    counters.clear()
    for lengths in ([4, 9, 9, 2], [3] * 4, [3, 7], [5], [2 + i % 9 for i in range(20)], [6] * 19):
        engine.generate(prompts(lengths, seed=len(lengths)), SamplingParams(max_tokens=4, **GREEDY))
    assert counters["stats"]["unique_graphs"] == 0, "a decode step compiled after warm_up"


@pytest.mark.slow  # compiles two batch shapes: ~15 s
def test_a_compiled_batch_past_the_gather_limit_sorts_its_experts_outside_the_graph(model, monkeypatch):
    """18 rows route 18 tokens a step, past the gather limit (16): the experts run sorted, outside
    the graph, and the tokens and logprobs still equal eager decoding's."""
    sorted_batches = []
    run_sorted = Experts._sorted_outside_the_graph

    def spy(self, x_ND, idx_NK, counts_E):
        sorted_batches.append(x_ND.shape[0])
        return run_sorted(self, x_ND, idx_NK, counts_E)

    monkeypatch.setattr(Experts, "_sorted_outside_the_graph", torch.compiler.disable(spy))
    ps = prompts([3 + i % 7 for i in range(18)], seed=6)
    params = SamplingParams(max_tokens=5, logprobs=0, **GREEDY)
    eager = Engine(model, max_batch_size=18, max_seq_len=32).generate(ps, params)
    assert not sorted_batches  # eager decoding never takes it
    compiled = Engine(model, max_batch_size=18, max_seq_len=32, compile=True).generate(ps, params)
    assert sorted_batches and set(sorted_batches) == {18}
    assert [r.token_ids for r in compiled] == [r.token_ids for r in eager]
    for got, want in zip(compiled, eager):
        torch.testing.assert_close(torch.tensor([lp["logprob"] for lp in got.logprobs]),
                                   torch.tensor([lp["logprob"] for lp in want.logprobs]), atol=1e-4, rtol=0)


def test_a_compiled_server_backend_is_warm_when_loaded():
    from conftest_serve import tiny_checkpoint

    from glm45.serve.backend import EngineBackend

    backend = EngineBackend.load(tiny_checkpoint(), max_batch_size=2, max_model_len=64, compile=True)
    assert backend.engine.compiled and backend.engine.stats()["requests"] == 0
    counters.clear()
    backend.engine.generate("hi", SamplingParams(max_tokens=4, **GREEDY))
    assert counters["stats"]["unique_graphs"] == 0
