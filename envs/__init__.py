"""The built-in environment suite. Importing this package registers every built-in id by string
entry point; the env modules themselves are imported only by ``agentsd.make``."""

from agentsd.registry import Split, register

#: seeds [0, 1e6) train, [1e6, 1.1e6) test; they never overlap (checked by EnvSpec)
SEED_SPLITS = {"train": Split((0, 1_000_000)), "test": Split((1_000_000, 1_100_000))}

for _suffix, _difficulty, _turns in (("Easy-", "easy", 10), ("", "medium", 20), ("Hard-", "hard", 30)):
    register(
        f"Sokoban-{_suffix}v0",
        "agentsd.envs.sokoban:SokobanEnv",
        kwargs={"difficulty": _difficulty},
        max_turns=_turns,
        tags=("puzzle", "planning", _difficulty),
        splits=SEED_SPLITS,
        description=f"Sokoban, {_difficulty} preset; word moves, several per turn",
        on_duplicate="ignore",
    )

#: the easy levels played one move per turn: the board comes back after every move, so the policy
#: is reactive (the move for the board in front of it) rather than a whole plan written blind
register(
    "Sokoban-Step-v0",
    "agentsd.envs.sokoban:SokobanEnv",
    kwargs={"difficulty": "easy", "max_moves_per_turn": 1},
    max_turns=12,
    tags=("puzzle", "planning", "easy", "reactive"),
    splits=SEED_SPLITS,
    description="Sokoban, easy preset, one move per turn (12 turns)",
    on_duplicate="ignore",
)

#: ToolWorld: held-out task templates in the test split (not only new seeds)
TOOLWORLD_SPLITS = {"train": Split((0, 1_000_000), {"task_split": "train"}),
                    "test": Split((1_000_000, 1_100_000), {"task_split": "test"})}
for _suffix, _difficulty, _turns in (("Easy-", "easy", 15), ("", "medium", 30), ("Hard-", "hard", 40)):
    register(
        f"ToolWorld-{_suffix}v0",
        "agentsd.envs.toolworld.env:ToolWorldEnv",
        kwargs={"difficulty": _difficulty, "task_split": "train"},
        max_turns=_turns,
        tags=("tool-use", "apps", "multi-turn", _difficulty),
        splits=TOOLWORLD_SPLITS,
        description=f"AppWorld-style offline apps (55 APIs), {_difficulty} tasks; state-graded",
        on_duplicate="ignore",
    )

#: Code: generated problems hold out whole templates in the test split; HumanEval holds out every
#: 4th problem (41); seeds pick a problem within the split's subset
for _id, _problems, _desc in (
    ("Code-Gen-v0", "generated", "write a function from 12 generated templates; visible/hidden tests"),
    ("Code-HumanEval-v0", "humaneval", "HumanEval (164) with run_tests/submit tools; hidden check"),
):
    register(
        _id,
        "agentsd.envs.code:CodeEnv",
        kwargs={"problems": _problems},
        max_turns=6,
        tags=("code", "sandbox", "multi-turn"),
        splits={"train": Split((0, 1_000_000), {"subset": "train"}),
                "test": Split((1_000_000, 1_100_000), {"subset": "test"})},
        description=_desc,
        on_duplicate="ignore",
    )

#: ToolWorld-Lite: 1-4-call tasks with only the needed apps' tools in the prompt (CPU-sized); three
#: disjoint template groups: train (new instances in "test"), heldout ("test_templates") and warm
#: (format demonstrations only)
register(
    "ToolWorld-Lite-v0",
    "agentsd.envs.toolworld.lite:ToolWorldLiteEnv",
    kwargs={"group": "train"},
    max_turns=8,
    tags=("tool-use", "apps", "multi-turn", "easy", "cpu"),
    splits={"train": Split((0, 1_000_000), {"group": "train"}),
            "test": Split((1_000_000, 1_100_000), {"group": "train"}),
            "test_templates": Split((1_100_000, 1_200_000), {"group": "heldout"}),
            "warm": Split((2_000_000, 3_000_000), {"group": "warm"})},
    description="ToolWorld with 1-4-call tasks and only the task's apps in the prompt (<400 tokens)",
    on_duplicate="ignore",
)
