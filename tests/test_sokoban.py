"""Sokoban: generation, solver, parsing, reward terms, rendering."""

from __future__ import annotations

import numpy as np
import pytest

import agentsd
from agentsd.envs.sokoban import (
    PRESETS,
    Level,
    generate_level,
    live_squares,
    parse_moves,
    render,
    solve,
    step_level,
    validate,
)

CORRIDOR = Level(walls=("######", "#    #", "######"), targets=frozenset({(1, 4)}),
                 boxes=frozenset({(1, 3)}), player=(1, 1))


def _levels(preset: str, n: int):
    for s in range(n):
        yield s, generate_level(np.random.default_rng(s), **PRESETS[preset])


def test_solver_known_level():
    assert solve(CORRIDOR) == ["Right", "Right"]
    assert validate(CORRIDOR, ["Right", "Right"])
    assert not validate(CORRIDOR, ["Right"])


def test_box_in_corner_is_dead_and_unsolvable():
    level = Level(walls=("#####", "#   #", "#   #", "#####"), targets=frozenset({(2, 2)}),
                  boxes=frozenset({(1, 1)}), player=(2, 3))
    assert (1, 1) not in live_squares(level)
    assert solve(level) is None


def test_push_rules():
    lv, ev = step_level(CORRIDOR, "Left")
    assert ev == "moved" and lv.player == (1, 1) or ev == "wall"
    lv, ev = step_level(Level(CORRIDOR.walls, CORRIDOR.targets, frozenset({(1, 2), (1, 3)}), (1, 1)), "Right")
    assert ev == "blocked"  # two boxes in a row cannot be pushed
    lv, ev = step_level(Level(CORRIDOR.walls, CORRIDOR.targets, CORRIDOR.boxes, (1, 2)), "Right")
    assert ev == "pushed" and lv.boxes == frozenset({(1, 4)}) and lv.solved


@pytest.mark.parametrize("preset", list(PRESETS))
def test_generated_levels_are_solved_by_their_plans(preset):
    for _, (level, plan) in _levels(preset, 60):
        assert not level.solved
        assert len(plan) >= PRESETS[preset]["min_plan"]
        assert validate(level, plan)


@pytest.mark.slow
@pytest.mark.parametrize("preset", list(PRESETS))
def test_500_levels_per_preset_all_solved_and_replay_in_env(preset):
    env_id = {"easy": "Sokoban-Easy-v0", "medium": "Sokoban-v0", "hard": "Sokoban-Hard-v0"}[preset]
    env = agentsd.make(env_id, max_turns=100)
    for s in range(500):
        env.reset(seed=s)
        plan = env.privileged().plan
        assert plan and validate(env.unwrapped.start, plan)
        info = {}
        for i in range(0, len(plan), env.unwrapped.max_moves_per_turn):
            _, _, term, trunc, info = env.step("<answer>" + " ".join(plan[i:i + 8]) + "</answer>")
            if term or trunc:
                break
        assert info.get("success") is True, (preset, s)


def test_generation_is_deterministic_per_seed():
    a = generate_level(np.random.default_rng(5), **PRESETS["medium"])
    b = generate_level(np.random.default_rng(5), **PRESETS["medium"])
    assert a == b


def test_parse_moves():
    assert parse_moves("<answer>Up, left r D</answer>") == (["Up", "Left", "Right", "Down"], None)
    assert parse_moves("Up Up")[0] == ["Up", "Up"]
    moves, err = parse_moves("<answer>Up jump</answer>")
    assert moves is None and "'jump' is not a move" in err
    moves, err = parse_moves("I think I should go up")
    assert moves is None and "no <answer>" in err


def test_reward_terms_and_success():
    env = agentsd.make("Sokoban-Easy-v0", seed=1)
    env.reset()
    plan = env.privileged().plan
    total = 0.0
    for m in plan:
        _, r, term, _, info = env.step(f"<answer>{m}</answer>")
        total += r
        assert sum(info["reward_terms"].values()) == pytest.approx(r)
    assert term and info["success"] and info["reward_terms"]["solved"] == 10.0
    assert total == pytest.approx(-0.1 * len(plan) + 1.0 + 10.0)


def test_invalid_action_gets_feedback_and_penalty():
    env = agentsd.make("Sokoban-v0", seed=0)
    env.reset()
    obs, r, term, trunc, info = env.step("let me think")
    assert info["parse"] == "no_action" and r == -0.5 and info["reward_terms"] == {"format": -0.5}
    assert "Invalid action" in obs[0]["content"] and "#" in obs[0]["content"]
    _, _, _, _, info = env.step("<answer>jump</answer>")
    assert info["parse"] == "invalid_action"


def test_too_many_moves_are_capped():
    env = agentsd.make("Sokoban-Hard-v0", seed=0)
    env.reset()
    obs, _, _, _, info = env.step("<answer>" + "Up " * 20 + "</answer>")
    assert info["moves_executed"] == 8 and "Only the first 8" in obs[0]["content"]


def test_next_step_hint_follows_state():
    env = agentsd.make("Sokoban-v0", seed=2)
    env.reset()
    first = env.privileged()
    assert first.next_step.split() == first.plan[:8]
    env.step(f"<answer>{first.plan[0]}</answer>")
    after = env.privileged()
    assert after.extra["moves_remaining"] == len(first.plan) - 1


def test_step_variant_plays_one_move_per_turn_to_the_solution():
    env = agentsd.make("Sokoban-Step-v0", seed=agentsd.split_seeds("Sokoban-Step-v0", "test", 1)[0])
    obs, _ = env.reset()
    assert "(one move per turn)" in obs[1]["content"] and "at most" not in obs[1]["content"]
    plan = env.privileged().plan
    for k, move in enumerate(plan):  # the oracle names exactly the next move of the plan
        assert env.unwrapped.oracle_action() == f"<answer>{move}</answer>"
        obs, _, term, trunc, info = env.step(env.unwrapped.oracle_action())
        assert info["moves_executed"] == 1 and term == (k == len(plan) - 1) and not trunc
    assert info["success"]
    env.reset()
    _, _, _, _, info = env.step("<answer>Up Up</answer>")  # a second move is not executed
    assert info["moves_executed"] == 1


def test_render_legend_and_coordinates():
    text = render(CORRIDOR)
    assert text.splitlines()[1] == "#@ $.#"
    coords = render(CORRIDOR, coordinates=True)
    assert coords.splitlines()[0].strip() == "012345"


def test_bad_kwargs_are_named():
    with pytest.raises(ValueError, match="difficulty must be one of"):
        agentsd.make("Sokoban-v0", difficulty="impossible")
    with pytest.raises(ValueError, match="boxes must be a positive int"):
        agentsd.make("Sokoban-v0", boxes=0)
