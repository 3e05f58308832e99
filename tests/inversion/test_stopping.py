"""The plateau rule: stop after `patience` checks without a real improvement, never before `min_steps`;
its state survives a round trip through the checkpoint's JSON."""

from __future__ import annotations

import json

import pytest

from inversion.config import PlateauRule, TrainConfig
from inversion.errors import ConfigError
from inversion.training.stopping import StopState
from inversion.training.trainer import pack_steps

RULE = PlateauRule(every=10, patience=2, min_delta=0.05, min_steps=30)


def test_stops_after_patience_checks_without_a_real_improvement():
    state = StopState()
    verdicts = [state.observe(step, loss, RULE) for step, loss in [(10, 1.0), (20, 0.90), (30, 0.88), (40, 0.87)]]
    # 0.90 beats 1.0 by more than 5%; 0.88 and 0.87 do not beat 0.90 by 5%: two stale checks → stop at 40
    assert verdicts == [False, False, False, True]
    assert (state.best, state.best_step, state.reason) == (0.90, 20, "plateau")


def test_never_stops_before_min_steps_and_keeps_improving():
    state = StopState()
    assert not any(state.observe(step, 1.0, RULE) for step in (10, 20))  # flat, but before step 30
    assert state.observe(30, 1.0, RULE)
    falling = StopState()
    assert not any(falling.observe(step, 0.8**i, RULE) for i, step in enumerate(range(10, 200, 10)))


def test_state_round_trips_through_json():
    state = StopState()
    for step, loss in [(10, 1.0), (20, 0.99)]:
        state.observe(step, loss, RULE)
    again = StopState.from_dict(json.loads(json.dumps(state.to_dict())))
    assert again == state
    assert StopState.from_dict(None) == StopState()


def test_config_validates_the_rule():
    assert TrainConfig().plateau is None
    assert TrainConfig(stop="plateau", stop_every=5).plateau == PlateauRule(5, 3, 0.01, 50)
    with pytest.raises(ConfigError, match="stop must be one of fixed, plateau, got 'early'"):
        TrainConfig(stop="early")
    with pytest.raises(ConfigError, match="stop_every must be >= 1, got 0"):
        TrainConfig(stop_every=0)


def test_pack_steps_of_a_continuous_pack():
    assert pack_steps([10, 10, 10, 10], 4) == 10
    assert pack_steps([10, 1, 1], 2) == 10  # the two short ones share the second slot
    assert pack_steps([4, 4, 4], 2) == 8
    assert pack_steps([0, 5], 1) == 5
