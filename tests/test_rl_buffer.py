"""Rollout records, prompt sources, the data buffer (filters, strategies, staleness, threads,
checkpoint round trips), dynamic sampling and overlong handling."""

from __future__ import annotations

import json
import threading
import time

import pytest

from glm45.infer.outputs import GenerationResult
from glm45.rl import (DataBuffer, IterableSource, ListSource, OverlongConfig, PrioritySampling, RLError, Sample,
                      Status, apply_overlong, collect_groups, from_generation, group_samples, has_reward_variance,
                      max_staleness, no_failed, prompts_to_request)


def group(gid, rewards, version=0, status=Status.COMPLETED):
    return [Sample([1, 2], [3, 4], reward=r, group_id=gid, index=i, weight_version=version, status=status,
                   prompt={"id": gid}) for i, r in enumerate(rewards)]


# ---- Sample ------------------------------------------------------------------------------------


def test_sample_defaults_validation_and_round_trip():
    s = Sample([5, 6], [7, 8, 9], rollout_logprobs=[-0.1, -2.0, -0.5], reward=1.0, group_id=3, index=1,
               weight_version=4, prompt={"q": "x"}, metadata={"turns": 1})
    assert s.loss_mask == [1, 1, 1] and s.num_trainable_tokens == 3 and s.staleness(6) == 2
    back = Sample.from_dict(json.loads(json.dumps(s.to_dict())))
    assert back == s and back.status is Status.COMPLETED
    with pytest.raises(RLError, match="loss_mask has 2 entries for 3"):
        Sample([1], [2, 3, 4], loss_mask=[1, 0])
    with pytest.raises(RLError, match="log-probabilities"):
        Sample([1], [2], rollout_logprobs=[0.5])
    with pytest.raises(RLError, match="finite"):
        Sample([1], [2], reward=float("nan"))
    with pytest.raises(RLError, match="status must be one of"):
        Sample([1], [2], status="exploded")
    with pytest.raises(RLError, match="unknown fields"):
        Sample.from_dict({"prompt_ids": [1], "colour": "red"})


def test_multi_turn_trajectory_masks_environment_tokens():
    s = Sample([1, 2])
    s.extend([10, 11], trainable=True, logprobs=[-0.5, -0.25])  # assistant turn with a tool call
    s.extend([20, 21, 22], trainable=False)  # tool result
    s.extend([12], trainable=True, logprobs=[-1.0])  # final answer
    assert s.response_ids == [10, 11, 20, 21, 22, 12]
    assert s.loss_mask == [1, 1, 0, 0, 0, 1]
    assert s.rollout_logprobs == [-0.5, -0.25, 0.0, 0.0, 0.0, -1.0]
    with pytest.raises(RLError, match="needs its rollout logprobs"):
        s.extend([13], trainable=True)
    with pytest.raises(RLError, match="environment tokens"):
        s.extend([30], trainable=False, logprobs=[-1.0])
    # Without logprobs throughout (the trainer recomputes them) that is fine too.
    t = Sample([1])
    t.extend([2], trainable=True)
    t.extend([3], trainable=False)
    assert t.loss_mask == [1, 0] and t.rollout_logprobs is None


def test_from_generation_maps_finish_reasons_and_logprobs():
    result = GenerationResult("r1", [1, 2, 3], [4, 5], "ab", "length",
                              logprobs=[{"token_id": 4, "logprob": -0.5, "top": []},
                                        {"token_id": 5, "logprob": -1.5, "top": []}])
    s = from_generation(result, prompt={"id": 9}, group_id=2, index=1, weight_version=7)
    assert s.status is Status.TRUNCATED and s.rollout_logprobs == [-0.5, -1.5]
    assert (s.prompt_ids, s.response_ids, s.response_text, s.weight_version) == ([1, 2, 3], [4, 5], "ab", 7)
    assert from_generation(GenerationResult("r", [1], [2], "", "stop")).status is Status.COMPLETED
    with pytest.raises(RLError, match="finish reason"):
        from_generation(GenerationResult("r", [1], [2], "", "eaten"))
    groups = group_samples([*group(1, [0, 1]), *group(0, [1])][::-1])
    assert [[(s.group_id, s.index) for s in g] for g in groups] == [[(0, 0)], [(1, 0), (1, 1)]]


# ---- sources -----------------------------------------------------------------------------------


def test_list_source_epochs_shuffle_and_resume():
    src = ListSource(list(range(5)), shuffle=True, seed=3, epochs=2)
    first = src.take(3)
    state = src.state_dict()
    rest = src.take(100)
    assert len(first + rest) == 10 and sorted(first + rest) == sorted(list(range(5)) * 2)
    assert sorted((first + rest)[:5]) == list(range(5))  # each epoch visits every item once
    assert (first + rest)[:5] != (first + rest)[5:]  # reshuffled per epoch
    again = ListSource(list(range(5)), shuffle=True, seed=3, epochs=2)
    again.load_state_dict(json.loads(json.dumps(state)))
    assert again.take(100) == rest
    with pytest.raises(RLError, match="items"):
        ListSource([1, 2]).load_state_dict(state)


def test_iterable_source_resumes_by_skipping():
    src = IterableSource(iter(range(100)))
    assert src.take(4) == [0, 1, 2, 3]
    fresh = IterableSource(iter(range(100)))
    fresh.load_state_dict(src.state_dict())
    assert fresh.take(2) == [4, 5]
    with pytest.raises(RLError, match="ended"):
        IterableSource(iter(range(2))).load_state_dict({"consumed": 4})


# ---- the buffer ----------------------------------------------------------------------------------


def test_prompts_get_group_ids_and_requeued_prompts_come_first():
    buf = DataBuffer(["a", "b", "c", "d"])
    items = buf.next_prompts(3)
    assert [(p.group_id, p.prompt) for p in items] == [(0, "a"), (1, "b"), (2, "c")]
    buf.requeue(items[1:])  # aborted by a weight update
    again = buf.next_prompts(3)
    assert [(p.group_id, p.prompt) for p in again] == [(1, "b"), (2, "c"), (3, "d")]
    assert buf.stats["prompts_served"] == 4 and buf.stats["prompts_requeued"] == 2
    with pytest.raises(RLError, match="no data source"):
        DataBuffer().next_prompts(1)


def test_filters_drop_and_count_groups():
    buf = DataBuffer(filters=[has_reward_variance, no_failed], group_size=2)
    assert buf.add_group(group(0, [1.0, 0.0]))
    assert not buf.add_group(group(1, [1.0, 1.0]))
    assert not buf.add_group(group(2, [0.0, 0.0]))
    assert not buf.add_group(group(3, [1.0, 0.0], status=Status.FAILED))
    assert len(buf) == 1 and buf.num_samples == 2
    assert buf.stats["dropped"] == {"has_reward_variance": 2, "no_failed": 1}
    assert buf.stats["groups_received"] == 4 and buf.stats["groups_accepted"] == 1
    with pytest.raises(RLError, match="expected 2"):
        buf.add_group(group(4, [1.0, 0.0, 0.5]))
    with pytest.raises(RLError, match="share one group_id"):
        buf.add_group(group(5, [1.0]) + group(6, [0.0]))


def test_sampling_strategies():
    def filled(strategy, seed=0):
        buf = DataBuffer(strategy=strategy, seed=seed)
        for gid, rewards in enumerate([[1, 0], [1, 1, 0, 0], [0.5, 0.4], [1, 0, 0, 0]]):
            buf.add_group(group(gid, rewards, version=gid))
        return buf

    ids = lambda groups: [g[0].group_id for g in groups]  # noqa: E731
    assert ids(filled("fifo").pop_groups(3)) == [0, 1, 2]
    assert ids(filled("lifo").pop_groups(3)) == [3, 2, 1]
    assert ids(filled("priority:reward_spread").pop_groups(2)) == [0, 1]  # spread 0.5, 0.5 (ties: oldest first)
    assert ids(filled("priority:newest").pop_groups(2)) == [3, 2]
    custom = PrioritySampling(lambda g: -len(g))
    assert ids(filled(custom).pop_groups(4)) == [0, 2, 1, 3]
    a, b = filled("random", seed=5), filled("random", seed=5)
    first = ids(a.pop_groups(2))
    assert first == ids(b.pop_groups(2)) and sorted(first + ids(a.pop_groups(5))) == [0, 1, 2, 3]
    buf = filled("fifo")
    buf.pop_groups(3)
    assert ids(buf.pop_groups(5)) == [3] and len(buf) == 0  # fewer when fewer are there
    with pytest.raises(RLError, match="unknown sampling strategy"):
        DataBuffer(strategy="best")


def test_staleness_bound_drops_old_groups():
    buf = DataBuffer(max_staleness=1)
    for gid, version in enumerate([3, 5, 4, 6]):
        buf.add_group(group(gid, [1, 0], version=version))
    assert [g[0].group_id for g in buf.pop_groups(4, current_version=6)] == [1, 3]
    assert buf.stats["stale_dropped"] == 2
    # The same bound as an add-time filter.
    now = {"v": 10}
    strict = DataBuffer(filters=[max_staleness(lambda: now["v"], 2)])
    assert strict.add_group(group(0, [1, 0], version=8)) and not strict.add_group(group(1, [1, 0], version=7))
    assert strict.stats["dropped"] == {"max_staleness_2": 1}


def test_producers_and_consumer_in_threads():
    buf = DataBuffer(filters=[has_reward_variance])

    def produce(start):
        for gid in range(start, start + 20):
            buf.add_group(group(gid, [1, 0] if gid % 4 else [1, 1]))
            time.sleep(0.001)

    threads = [threading.Thread(target=produce, args=(s,)) for s in (0, 100, 200)]
    for t in threads:
        t.start()
    got = []
    while len(got) < 45:
        batch = buf.pop_groups(5, timeout=10)
        assert len(batch) == 5  # waits until five are there
        got += batch
    for t in threads:
        t.join()
    assert sorted(g[0].group_id for g in got) == sorted(g for s in (0, 100, 200) for g in range(s, s + 20) if g % 4)
    assert buf.stats["dropped"]["has_reward_variance"] == 15
    t0 = time.monotonic()
    assert buf.pop_groups(1, timeout=0.2) == [] and time.monotonic() - t0 >= 0.19


def test_state_round_trip_resumes_exactly():
    def make():
        return DataBuffer(ListSource([{"id": i} for i in range(7)], shuffle=True, seed=1), strategy="random",
                          filters=[has_reward_variance], seed=11)

    buf = make()
    items = buf.next_prompts(4)
    buf.requeue(items[3:])
    for p in items[:3]:
        buf.add_group(group(p.group_id, [1, 0] if p.group_id != 1 else [0, 0], version=p.group_id))
    buf.add_group(group(50, [0.2, 0.9]))
    state = json.loads(json.dumps(buf.state_dict()))  # JSON-able, as a checkpoint stores it

    restored = make()
    restored.load_state_dict(state)
    assert restored.stats == buf.stats and len(restored) == len(buf) == 3
    for b in (buf, restored):
        b.add_group(group(60, [0, 1]))
    order = lambda b: [g[0].group_id for g in b.pop_groups(4)]  # noqa: E731
    prompts = lambda b: [(p.group_id, p.prompt["id"]) for p in b.next_prompts(9)]  # noqa: E731
    assert order(restored) == order(buf)
    assert prompts(restored) == prompts(buf)
    with pytest.raises(RLError, match="lacks"):
        make().load_state_dict({"groups": []})


# ---- dynamic sampling -----------------------------------------------------------------------------


def test_collect_groups_oversamples_until_the_batch_is_full():
    pulled = []

    def rollouts():
        for gid, rewards in enumerate([[1, 1], [1, 0], [0, 0], [0, 1], [0.5, 0.5], [1, 0], [0, 1], [1, 0]]):
            pulled.append(gid)
            yield group(gid, rewards)

    batch, report = collect_groups(rollouts(), 3)
    assert [g[0].group_id for g in batch] == [1, 3, 5]
    assert pulled == [0, 1, 2, 3, 4, 5]  # no more rollouts than needed
    assert (report.groups_seen, report.groups_kept, report.groups_dropped, report.samples_generated) == (6, 3, 3, 12)
    assert report.keep_rate == 0.5 and not report.exhausted
    short, report = collect_groups(iter([group(0, [1, 1]), group(1, [0, 1])]), 2)
    assert len(short) == 1 and report.exhausted
    capped, report = collect_groups((group(g, [1, 1]) for g in range(10**6)), 2, max_groups_seen=50)
    assert capped == [] and report.groups_seen == 50 and report.exhausted
    assert prompts_to_request(8, 0.5) == 16 and prompts_to_request(8, None) == 8
    assert prompts_to_request(8, 0.01) == 32  # capped at max_factor 4
    with pytest.raises(RLError):
        collect_groups([], 4, max_groups_seen=2)


# ---- overlong --------------------------------------------------------------------------------------


def test_overlong_mask_penalty_keep():
    def samples():
        return [Sample([1], [2, 3], reward=0.0, status=Status.TRUNCATED, group_id=0),
                Sample([1], [2, 3], reward=1.0, group_id=0, index=1)]

    masked = samples()
    assert apply_overlong(masked, OverlongConfig("mask")) == 1
    assert masked[0].loss_mask == [0, 0] and masked[0].reward == 0.0 and masked[1].loss_mask == [1, 1]
    penalised = samples()
    apply_overlong(penalised, OverlongConfig("penalty", penalty=0.5))
    apply_overlong(penalised, OverlongConfig("penalty", penalty=0.5))  # applied once only
    assert penalised[0].reward == -0.5 and penalised[0].loss_mask == [1, 1] and penalised[1].reward == 1.0
    kept = samples()
    apply_overlong(kept, OverlongConfig("keep"))
    assert kept[0].reward == 0.0 and kept[0].loss_mask == [1, 1]
    with pytest.raises(RLError, match="mode"):
        OverlongConfig("ignore")
