"""The two-stage difficulty curriculum: pool moves from recorded rollouts, drawing prompts, the
stage switch, state round trips, and use as the data buffer's source."""

from __future__ import annotations

import json

import pytest

from glm45.rl import CurriculumConfig, DataBuffer, DifficultyCurriculum, RLError, Sample


def cfg(**kw):
    base = dict(k_small=2, k_large=6, easy_window=4, easy_rate=1.0, candidate_share=0.25, saturation_reward=0.9,
                plateau_window=3, plateau_min_delta=0.01, min_hard_prompts=1, seed=0)
    base.update(kw)
    return CurriculumConfig(**base)


def prompts(n):
    return [{"id": f"p{i}", "question": f"q{i}"} for i in range(n)]


def test_pool_moves_follow_the_first_success():
    cur = DifficultyCurriculum(prompts(6), cfg())
    assert cur.sizes()["moderate"] == 6
    assert cur.record("p0", [1, 0]) == "moderate"  # solved within k_small
    assert cur.record("p1", [0, 0]) == "candidate"  # pass@2 = 0: verify with more samples
    assert cur.record("p1", [0, 1]) == "hard"  # first success at attempt 3 < k_large: verified hard
    assert cur.record("p2", [0, 0]) == "candidate"
    assert cur.record("p2", [0, 0]) == "candidate"
    assert cur.record("p2", [0, 0]) == "unsolvable"  # nothing in k_large = 6 attempts
    assert cur.record("p3", [0, 0, 1, 0]) == "hard"  # both tests read off one larger group
    assert cur.record("p4", [0]) == "moderate"  # too few attempts to judge
    assert cur.record("p4", [0, 0, 0, 0, 0, 0, 1]) == "unsolvable"  # first success only at attempt 7
    assert cur.record("p5", [1, 1]) == "moderate"
    assert cur.record("p5", [1, 1]) == "easy"  # the last easy_window attempts all solved: retired
    st = cur.stats("p1")
    assert (st.attempts, st.successes, st.first_success) == (4, 1, 3)
    assert cur.sizes() == {"moderate": 1, "candidate": 0, "hard": 2, "easy": 1, "unsolvable": 2}
    # Hard prompts retire too once they are reliably solved.
    for _ in range(2):
        cur.record("p3", [1, 1])
    assert cur.pool_of("p3") == "easy"
    with pytest.raises(RLError, match="unknown prompt"):
        cur.record("nope", [1])


def test_take_serves_the_stage_pool_least_served_first_plus_candidates():
    cur = DifficultyCurriculum(prompts(8), cfg())
    cur.record("p6", [0, 0])  # candidate
    cur.record("p7", [1, 1, 1, 1])  # easy: never served
    first = [p["id"] for p in cur.take(4)]
    assert "p6" in first and "p7" not in first and len(set(first)) == 4  # one of four goes to candidates
    second = [p["id"] for p in cur.take(5)]
    moderate_first = [p for p in first if p != "p6"]
    # The three moderate prompts not yet served come before any repeat.
    assert {p for p in second if p != "p6"} >= {f"p{i}" for i in range(6)} - set(moderate_first)
    assert len(cur.take(100)) == 7  # distinct prompts only: 6 moderate + 1 candidate
    # Deterministic under the seed.
    a, b = DifficultyCurriculum(prompts(8), cfg(seed=4)), DifficultyCurriculum(prompts(8), cfg(seed=4))
    assert [p["id"] for p in a.take(3)] == [p["id"] for p in b.take(3)]


def test_stage_switch_waits_for_saturation_and_a_verified_hard_pool():
    cur = DifficultyCurriculum(prompts(5), cfg())
    for pid in ("p0", "p1", "p2"):
        cur.record(pid, [1, 1, 1, 0])
    cur.record("p3", [0, 0])  # candidate; its rewards still count for this step's moderate mean
    assert not cur.end_step() and cur.last_moderate_reward == pytest.approx(9 / 14)
    for pid in ("p0", "p1"):
        cur.record(pid, [1, 1, 1, 1, 1, 1, 1, 1, 1, 0])  # 0.9 mean: saturated
    assert not cur.end_step() and cur.stage == 1  # but no verified hard prompt yet
    assert cur.saturated
    cur.record("p3", [0, 1])  # verification rollouts of a candidate: p3 is hard
    assert cur.pool_of("p3") == "hard"
    assert cur.end_step() and cur.stage == 2
    assert [p["id"] for p in cur.take(3)] == ["p3"]  # stage 2 draws only verified hard prompts
    with pytest.raises(RLError):
        cur.set_stage(3)


def test_plateau_of_the_moderate_reward_also_saturates():
    cur = DifficultyCurriculum(prompts(3), cfg(saturation_reward=0.99), pool="moderate")
    cur.add_prompts([{"id": "h0"}], pool="hard")  # an offline-verified hard set
    for step in range(5):
        cur.record("p0", [1, 0])
        assert not cur.end_step()
    cur.record("p0", [1, 0])
    assert cur.end_step() and cur.stage == 2  # six steps flat at 0.5: plateaued
    with pytest.raises(RLError, match="duplicate"):
        cur.add_prompts([{"id": "h0"}])
    with pytest.raises(RLError, match="id"):
        DifficultyCurriculum([{"question": "no id"}])


def test_record_group_and_buffer_integration():
    cur = DifficultyCurriculum(prompts(4), cfg())
    buf = DataBuffer(cur)
    items = buf.next_prompts(2)
    group = [Sample([1], [2], reward=r, group_id=items[0].group_id, index=i, prompt=items[0].prompt)
             for i, r in enumerate([0.0, 0.0])]
    assert cur.record_group(group) == "candidate"
    with pytest.raises(RLError, match="reward"):
        cur.record_group([Sample([1], [2], group_id=0, prompt=items[1].prompt)])


def test_state_round_trip():
    def make():
        return DifficultyCurriculum(prompts(6), cfg(seed=2))

    cur = make()
    cur.take(3)
    cur.record("p0", [0, 0])
    cur.record("p1", [0, 0, 1])
    cur.record("p2", [1, 0])
    cur.end_step()
    cur.record("p3", [1, 1])  # inside an unfinished step
    state = json.loads(json.dumps(cur.state_dict()))
    back = make()
    back.load_state_dict(state)
    assert back.sizes() == cur.sizes() and back.stats("p1") == cur.stats("p1") and back.steps == 1
    assert [p["id"] for p in back.take(4)] == [p["id"] for p in cur.take(4)]
    assert back.end_step() == cur.end_step() and back.last_moderate_reward == cur.last_moderate_reward
    with pytest.raises(RLError, match="does not match"):
        DifficultyCurriculum(prompts(5), cfg()).load_state_dict(state)


def test_config_errors():
    with pytest.raises(RLError, match="k_small"):
        CurriculumConfig(k_small=8, k_large=8)
    with pytest.raises(RLError, match="candidate_share"):
        CurriculumConfig(candidate_share=2)
