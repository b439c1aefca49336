"""AsyncEngine: streaming from a background thread, cancellation, weight updates, stats."""

import asyncio

import pytest

from glm45.infer import AsyncEngine, Engine, InferenceError, SamplingParams
from glm45.infer.async_engine import EngineClosedError
from glm45.model import GLM45ForCausalLM
from helpers_model import randomize, tiny_config

GREEDY = dict(temperature=0.0, ignore_eos=True)


@pytest.fixture()
def engine():
    model = randomize(GLM45ForCausalLM(tiny_config()), seed=51).eval()
    eng = AsyncEngine(Engine(model, max_batch_size=2, max_seq_len=64))
    yield eng
    eng.shutdown()


def test_concurrent_streams_match_the_sync_engine(engine):
    prompts = [[5, 6, 7], [9, 10], [11, 12, 13, 14]]
    expected = Engine(engine.engine.model, max_seq_len=64).generate(prompts, SamplingParams(max_tokens=6, **GREEDY))

    async def one(p, rid):
        toks, last = [], None
        async for out in engine.generate_stream(p, SamplingParams(max_tokens=6, **GREEDY), rid):
            toks += out.new_token_ids
            last = out
        return toks, last

    async def main():
        return await asyncio.gather(*(one(p, f"r{i}") for i, p in enumerate(prompts)))

    results = asyncio.run(main())
    for (toks, last), exp in zip(results, expected):
        assert toks == exp.token_ids and last.finished and last.result.token_ids == toks
    s = engine.stats()
    assert s["finished"] == 3 and s["queue_depth"] == 0 and s["batch_size"] == 0 and s["streams"] == 0


def test_cancelling_a_stream_frees_its_row(engine):
    async def main():
        long = SamplingParams(max_tokens=60, **GREEDY)
        seen = []

        async def consume(rid):
            async for out in engine.generate_stream([1, 2, 3], long, rid):
                seen.append(out.request_id)

        tasks = [asyncio.create_task(consume(f"long{i}")) for i in range(2)]
        while len(seen) < 4:
            await asyncio.sleep(0.005)
        assert engine.stats()["batch_size"] == 2
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Both rows are free again: a new request runs to completion at once.
        result = await engine.generate([4, 5], SamplingParams(max_tokens=3, **GREEDY))
        return result

    result = asyncio.run(main())
    assert len(result.token_ids) == 3
    assert engine.engine.scheduler.num_running == 0 and not engine.engine.requests


def test_errors_reach_the_caller_and_weights_update(engine):
    async def main():
        with pytest.raises(InferenceError, match="empty"):
            async for _ in engine.generate_stream([], SamplingParams()):
                pass
        with pytest.raises(InferenceError, match="max_seq_len"):
            await engine.generate(list(range(1, 80)))
        other = randomize(GLM45ForCausalLM(tiny_config()), seed=52).eval()
        await engine.update_weights(other.state_dict())
        got = await engine.generate([7, 8, 9], SamplingParams(max_tokens=4, **GREEDY))
        lp = await engine.score([7, 8, 9], got.token_ids)
        return other, got, lp

    other, got, lp = asyncio.run(main())
    ref = Engine(other, max_seq_len=64)
    assert got.token_ids == ref.generate([[7, 8, 9]], SamplingParams(max_tokens=4, **GREEDY))[0].token_ids
    assert lp == pytest.approx(ref.score([7, 8, 9], got.token_ids), abs=1e-5)


def test_shutdown_ends_open_streams():
    model = randomize(GLM45ForCausalLM(tiny_config()), seed=53).eval()
    eng = AsyncEngine(Engine(model, max_seq_len=1024))

    async def main():
        stream = eng.generate_stream([1, 2], SamplingParams(max_tokens=1000, **GREEDY))
        await stream.__anext__()
        eng.shutdown()
        with pytest.raises(EngineClosedError):
            async for _ in stream:
                pass
        with pytest.raises(EngineClosedError):
            await eng.generate([1, 2])

    asyncio.run(main())
    assert not eng._thread.is_alive()
