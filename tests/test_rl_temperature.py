"""Dynamic sampling temperature: plateau detection, selection within 1% of the best, state."""

from __future__ import annotations

import json

import pytest

from glm45.rl import DynamicTemperature, PlateauDetector, RLError, TemperatureConfig, select_temperature


def test_select_highest_temperature_within_tolerance():
    scores = {0.8: 0.600, 1.0: 0.620, 1.2: 0.612, 1.4: 0.550}
    # Relative 1%: floor 0.620 * 0.99 = 0.6138 -> 1.2 falls short, 1.0 is taken.
    assert select_temperature(scores, 0.01, relative=True) == 1.0
    # Absolute 0.01: floor 0.61 -> 1.2 qualifies.
    assert select_temperature(scores, 0.01, relative=False) == 1.2
    # Higher temperatures never win on their own merit alone: 1.4 is 11% worse.
    assert select_temperature(scores, 0.0) == 1.0
    assert select_temperature({0.7: 0.5, 1.3: 0.5}) == 1.3  # a tie goes to the more diverse one
    with pytest.raises(RLError, match="finite"):
        select_temperature({1.0: float("nan")})
    with pytest.raises(RLError, match="no temperatures"):
        select_temperature({})


def test_plateau_detector():
    p = PlateauDetector(window=2, min_delta=0.05)
    assert not any(p.update(v) for v in [0.1, 0.2, 0.3])
    assert not p.update(0.4)  # (0.1+0.2)/2 vs (0.3+0.4)/2: still rising
    assert not p.update(0.42) and not p.update(0.41)  # 0.35 vs 0.415
    assert p.update(0.40)  # 0.415 vs 0.405: flat
    p.reset()
    assert not p.update(0.4)
    with pytest.raises(RLError):
        p.update(float("inf"))


def test_temperature_rises_on_plateau_and_round_trips():
    calls = []

    def evaluate(t):  # held-out accuracy: flat up to 1.2, then falling apart
        calls.append(t)
        return {0.8: 0.70, 1.0: 0.71, 1.2: 0.705, 1.4: 0.60}[t]

    cfg = TemperatureConfig(initial=1.0, candidates=(0.8, 1.0, 1.2, 1.4), window=2, min_delta=0.01)
    dyn = DynamicTemperature(cfg, evaluate)
    for r in [0.2, 0.4, 0.6, 0.65]:
        assert not dyn.update(r)  # still improving
    assert calls == [] and dyn.temperature == 1.0
    assert not dyn.update(0.66)  # last two windows: 0.5 vs 0.655
    assert not dyn.update(0.66)  # 0.625 vs 0.66
    assert dyn.update(0.66)  # 0.655 vs 0.66: plateau -> evaluate every candidate
    assert calls == [0.8, 1.0, 1.2, 1.4] and dyn.temperature == 1.2
    assert dyn.history[-1]["previous"] == 1.0 and dyn.history[-1]["chosen"] == 1.2
    assert not dyn.update(0.66)  # the detector starts afresh after acting

    state = json.loads(json.dumps(dyn.state_dict()))
    back = DynamicTemperature(cfg, evaluate)
    back.load_state_dict(state)
    assert back.temperature == 1.2 and back.step == dyn.step and back.history == dyn.history
    for r in [0.66, 0.66, 0.66]:
        assert back.update(r) == dyn.update(r)

    broken = DynamicTemperature(cfg, lambda t: float("nan"))
    with pytest.raises(RLError, match="finite"):
        broken.reselect()
    with pytest.raises(RLError, match="positive"):
        TemperatureConfig(candidates=(0.0, 1.0))
