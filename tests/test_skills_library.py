"""SKILL.md files: round trip, validation errors that name the file and field, dedupe, save/load."""

from __future__ import annotations

import dataclasses

import pytest

from agentsd.skills.library import (
    Provenance,
    Skill,
    SkillError,
    SkillLibrary,
    SkillStats,
    load_library,
    load_skill,
    parse_skill_md,
    render_skill_md,
    similarity,
)

S = Skill("avoid-corners", "Use when a box is next to a wall.", "Sokoban-v0", "pitfall",
          "A box pushed into a corner that is not a target can never be moved again.",
          keywords=("corner", "deadlock"),
          provenance=Provenance(method="deterministic", summarizer="deterministic-v1",
                                source_trajectories=("t1", "t2"), n_sources=2),
          stats=SkillStats(support=2, episodes_with=4, successes_with=3))


def test_round_trip_and_rates():
    text = render_skill_md(S)
    assert text.startswith("---\nname: avoid-corners\n")
    assert parse_skill_md(text) == S
    assert S.stats.success_rate_with == 0.75 and S.stats.success_rate_without is None


@pytest.mark.parametrize("field,value,msg", [
    ("name", "Avoid Corners", "name must be lowercase"),
    ("name", "a" * 65, "name must be"),
    ("kind", "tip", "kind must be one of"),
    ("description", "", "description"),
    ("description", "two\nlines", "one line"),
    ("body", "  ", "body"),
    ("body", "x" * 5000, "body is 5000 chars"),
])
def test_invalid_fields_are_named(field, value, msg):
    with pytest.raises(SkillError, match=msg):
        dataclasses.replace(S, **{field: value})


def test_file_errors_name_file_and_field(tmp_path):
    d = tmp_path / "Sokoban-v0" / "avoid-corners"
    d.mkdir(parents=True)
    p = d / "SKILL.md"
    p.write_text(render_skill_md(S).replace("kind: pitfall", "kind: hint"))
    with pytest.raises(SkillError, match=r"SKILL.md: kind must be one of"):
        load_skill(p)
    p.write_text("no front matter")
    with pytest.raises(SkillError, match="front matter"):
        load_skill(p)
    p.write_text("---\nname: [unclosed\n---\nbody")
    with pytest.raises(SkillError, match="not valid YAML"):
        load_skill(p)
    p.write_text(render_skill_md(S).replace("  env: Sokoban-v0\n", ""))
    with pytest.raises(SkillError, match="missing required field.*env"):
        load_skill(p)
    p.write_text(render_skill_md(S).replace("metadata:\n", "colour: red\nmetadata:\n"))
    with pytest.raises(SkillError, match="unknown field.*colour"):
        load_skill(p)
    p.write_text(render_skill_md(S).replace("  kind: pitfall", "  kind: pitfall\n  colour: red"))
    with pytest.raises(SkillError, match="unknown metadata key 'colour'"):
        load_skill(p)
    p.write_text(render_skill_md(dataclasses.replace(S, name="other-name")))
    with pytest.raises(SkillError, match="folder"):
        load_skill(p)
    p.write_text(render_skill_md(dataclasses.replace(S, stats=SkillStats())).replace(
        "stats.support: '0'", "stats.support: '-3'"))
    with pytest.raises(SkillError, match="stats.support"):
        load_skill(p)


def test_save_load_and_env_folder_check(tmp_path):
    lib = SkillLibrary([S, dataclasses.replace(S, env="Sokoban-Hard-v0"),
                        dataclasses.replace(S, env="ns/Thing-v0")])
    paths = lib.save(tmp_path)
    assert len(paths) == 3 and (tmp_path / "ns__Thing-v0" / "avoid-corners" / "SKILL.md").is_file()
    back = load_library(tmp_path)
    assert list(back) == list(lib)
    assert [s.env for s in load_library(tmp_path, env="Sokoban-Hard-v0")] == ["Sokoban-Hard-v0"]
    # a skill filed under the wrong env folder is an error naming both
    wrong = tmp_path / "Sokoban-v0" / "misplaced"
    wrong.mkdir()
    (wrong / "SKILL.md").write_text(render_skill_md(dataclasses.replace(S, name="misplaced", env="X-v0")))
    with pytest.raises(SkillError, match="field 'env' is 'X-v0'"):
        load_library(tmp_path)
    with pytest.warns(UserWarning, match="skipping invalid skill"):
        assert len(load_library(tmp_path, strict=False)) == 3
    with pytest.raises(SkillError, match="does not exist"):
        load_library(tmp_path / "nope")


def test_dedupe_merges_near_duplicates_and_keeps_provenance():
    near = dataclasses.replace(
        S, name="corner-deadlock",
        body="A box pushed into a corner that is not a target can never move again.",
        provenance=Provenance(method="llm", source_trajectories=("t3",), n_sources=1),
        stats=SkillStats(support=1, episodes_with=2, successes_with=1))
    far = dataclasses.replace(S, name="answer-format", kind="workflow",
                              body="Reply with moves inside answer tags.", description="Use on every turn.")
    assert similarity(S, near) > 0.6 > similarity(S, far)
    lib = SkillLibrary([S, near, far])
    merged = lib.dedupe(threshold=0.6)
    assert merged == [("avoid-corners", "corner-deadlock")]
    kept = lib.get("Sokoban-v0", "avoid-corners")
    assert kept.provenance.source_trajectories == ("t1", "t2", "t3") and kept.provenance.n_sources == 3
    assert kept.stats.episodes_with == 6 and kept.stats.support == 3
    assert len(lib) == 2


def test_add_same_name_replaces_text_and_merges_stats():
    lib = SkillLibrary([S])
    newer = dataclasses.replace(S, body="Updated guidance about corners and walls.",
                                provenance=Provenance(method="deterministic", source_trajectories=("t9",),
                                                      n_sources=1),
                                stats=SkillStats(support=5))
    assert lib.add(newer) == "replaced"
    got = lib.get("Sokoban-v0", "avoid-corners")
    assert got.body.startswith("Updated") and got.stats.support == 7
    assert set(got.provenance.source_trajectories) == {"t1", "t2", "t9"}
    with pytest.raises(KeyError, match="has: \\['avoid-corners'\\]"):
        lib.get("Sokoban-v0", "nope")


@pytest.mark.parametrize("module", ["agentsd.hints", "agentsd.skills.library", "agentsd.skills.retrieve",
                                    "agentsd.skills.summarize", "agentsd.skills.scripted"])
def test_docstring_examples(module):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0


# ---- the Agent Skills specification (checked by its reference validator, skills-ref) -----------

OLD_LAYOUT = """---
name: avoid-corners
description: Use when a box is next to a wall.
env: Sokoban-v0
kind: pitfall
keywords:
- corner
- deadlock
provenance:
  method: deterministic
  summarizer: deterministic-v1
  source_trajectories:
  - t1
  - t2
  n_sources: 2
stats:
  support: 2
  episodes_with: 4
  successes_with: 3
---

A box pushed into a corner that is not a target can never be moved again.
"""


def test_files_follow_the_spec_and_custom_data_sits_under_metadata(tmp_path):
    import skills_ref

    tricky = dataclasses.replace(
        S, name="quotes-and-colons", description='Use when "it: fails" — ünïcødé, #hash & {braces}',
        keywords=("a, b", "c:d", " "), provenance=dataclasses.replace(S.provenance, notes="x: 'y'\nz", model="1.0"))
    paths = SkillLibrary([S, tricky]).save(tmp_path)
    for p in paths:
        assert skills_ref.validate(p.parent) == [], p.read_text()
        props = skills_ref.read_properties(p.parent)
        assert props.metadata["env"] == "Sokoban-v0" and "kind" in props.metadata
    back = load_library(tmp_path)
    assert back.get("Sokoban-v0", "avoid-corners") == S
    assert back.get("Sokoban-v0", "quotes-and-colons") == tricky
    assert tricky.keywords == ("a b", "c:d")  # a comma separates keywords on disk, so never inside one


def test_the_older_top_level_layout_still_loads(tmp_path):
    d = tmp_path / "Sokoban-v0" / "avoid-corners"
    d.mkdir(parents=True)
    (d / "SKILL.md").write_text(OLD_LAYOUT)
    old = load_skill(d)
    assert old == dataclasses.replace(S, stats=SkillStats(support=2, episodes_with=4, successes_with=3))
    SkillLibrary([old]).save(tmp_path)  # saving upgrades the file to the spec's layout
    assert "\nmetadata:\n" in (d / "SKILL.md").read_text() and load_skill(d) == old


def test_the_shipped_library_and_the_summarizers_pass_the_reference_validator(tmp_path):
    import skills_ref

    from agentsd.skills.library import default_root
    from agentsd.skills.scripted import scripted_episode
    from agentsd.skills.summarize import summarize_deterministic

    shipped = sorted(default_root().glob("*/*/SKILL.md"))
    assert shipped
    for p in shipped:
        assert skills_ref.validate(p.parent) == [], p
    trajs = [scripted_episode("Sokoban-Easy-v0", seed=s, policy=pol, split="train")
             for s in range(3) for pol in ("oracle", "examples")]
    written = SkillLibrary(summarize_deterministic(trajs, "Sokoban-Easy-v0")).save(tmp_path)
    assert written
    for p in written:
        assert skills_ref.validate(p.parent) == [], p.read_text()
