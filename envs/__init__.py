"""The built-in environment suite. Importing this package registers every built-in id by string
entry point; the env modules themselves are imported only by ``agentsd.make``."""

from agentsd.registry import Split, register

#: seeds [0, 1e6) train, [1e6, 1.1e6) test; they never overlap (checked by EnvSpec)
SEED_SPLITS = {"train": Split((0, 1_000_000)), "test": Split((1_000_000, 1_100_000))}

for _suffix, _difficulty, _turns in (("Easy-", "easy", 10), ("", "medium", 20), ("Hard-", "hard", 30)):
    register(
        f"Sokoban-{_suffix}v0",
        "envs.sokoban:SokobanEnv",
        kwargs={"difficulty": _difficulty},
        max_turns=_turns,
        tags=("puzzle", "planning", _difficulty),
        splits=SEED_SPLITS,
        description=f"Sokoban, {_difficulty} preset; word moves, several per turn",
        on_duplicate="ignore",
    )
