"""Skill bodies as rules: where arguments come from, the token bound, no episode values; the
Summarizer interface (deterministic, LLM on a fake and on a tiny random model); bad input."""

from __future__ import annotations

import json
import warnings

import pytest

import agentsd
from agentsd.cli import main as cli_main
from agentsd.policy.base import Generation
from agentsd.skills.guidance import (
    MAX_BODY_TOKENS,
    body_tokens,
    episode_calls,
    instance_values,
    leaked_values,
    source_of,
)
from agentsd.skills.library import KINDS, Skill, SkillError, SkillLibrary, load_library, render_skill_md
from agentsd.skills.scripted import scripted_episode
from agentsd.skills.summarize import (
    DeterministicSummarizer,
    LLMSummarizer,
    Summarizer,
    SummarizerUnavailable,
    check_body,
    refresh,
    summarize_llm,
)

TW = "ToolWorld-Easy-v0"
TEMPLATES = ("bank_balance", "count_unread", "event_date", "delete_event", "add_contact", "wifi_password")


@pytest.fixture(scope="module")
def tw_trajs():
    seeds = agentsd.split_seeds(TW, "train", 2 * len(TEMPLATES))
    out = []
    for k, name in enumerate(TEMPLATES):
        for s in seeds[2 * k: 2 * k + 2]:
            for pol in ("oracle", "noisy"):
                out.append(scripted_episode(TW, seed=s, policy=pol, noise=0.4, options={"template": name}))
    out += [scripted_episode(TW, seed=s, policy="examples") for s in seeds[:4]]
    return out


@pytest.fixture(scope="module")
def tw_skills(tw_trajs):
    return DeterministicSummarizer(now="2026-01-01T00:00:00+00:00").summarize(tw_trajs, TW)


@pytest.fixture(scope="module")
def sok_trajs():
    return [scripted_episode("Sokoban-Easy-v0", seed=s, policy=p, noise=0.4)
            for s in range(8) for p in ("oracle", "noisy", "examples")]


def test_sources_of_arguments():
    task = "Task: Delete my 'Gym 4' event on 2025-10-19."
    assert source_of("Gym 4", task, []).kind == "quoted"
    assert source_of("2025-10-19", task, []).label("start_date") == "<the start_date given in the task>"
    rows = [("supervisor__show_account_passwords", {"result": [{"app": "email", "password": "p1"},
                                                               {"app": "bank", "password": "p2"}]})]
    assert source_of("p2", task, rows, app="bank").label("password") == \
        "<the bank password from the supervisor__show_account_passwords result>"
    found = [("x__search", {"result": {"results": [{"id": 3}, {"id": 11}, {"id": 4}], "total_results": 3}})]
    # a number equal to an id is weak evidence for a non-id argument: the count wins
    assert source_of("3", task, found, arg="answer").label("answer") == "<total_results from the x__search result>"
    assert source_of(11, task, found, arg="event_id").label("event_id") == "<id from the x__search result>"
    assert source_of("zzz", task, found).kind == "unknown"


def test_episode_calls_trace_arguments_to_results(tw_trajs):
    t = next(t for t in tw_trajs if t.meta["template"] == "bank_balance" and t.policy == "scripted:oracle")
    calls = episode_calls(t)
    assert [c.name for c in calls][-2:] == ["bank__show_balance", "complete_task"]
    token = dict((a, s) for a, _, s in calls[-2].args)["access_token"]
    assert (token.kind, token.tool, token.key) == ("result", "bank__login", "access_token")


def test_one_workflow_per_template_naming_its_first_call(tw_skills):
    flows = {s.name: s for s in tw_skills if s.kind == "workflow"}
    assert sorted(flows) == sorted(f"{t.replace('_', '-')}-workflow" for t in TEMPLATES)
    bank = flows["bank-balance-workflow"]
    assert bank.body.startswith("First call supervisor__show_account_passwords()")
    assert "bank__show_balance(access_token=<access_token from" in bank.body
    assert bank.description == "Use when the task reads like: What is my current bank balance in dollars?"
    assert flows["event-date-workflow"].body.startswith(
        "First call calendar__search_events(query=<the quoted text from the task>)")
    assert "event_id=<id from the calendar__search_events result>" in flows["delete-event-workflow"].body
    assert "template=bank_balance" in bank.provenance.notes  # statistics and provenance: metadata


def test_pitfall_names_the_error_and_the_fix(tw_skills):
    pit = next(s for s in tw_skills if s.kind == "pitfall" and "access_token" in s.body)
    assert pit.body.startswith('If bank__show_balance returns "invalid or expired access_token')
    assert "call bank__login first, then bank__show_balance(access_token=<access_token from" in pit.body
    conv = {s.name: s for s in tw_skills if s.kind == "convention"}
    assert "finish-with-complete-task" in conv and "login-before-access-token" in conv
    assert conv["login-before-access-token"].body.startswith(
        "Before an APP call that takes access_token, call APP__login(username=<email from")


@pytest.mark.parametrize("which", ["tw", "sokoban"])
def test_bodies_are_bounded_kinded_and_hold_no_episode_values(which, tw_trajs, tw_skills, sok_trajs):
    trajs = tw_trajs if which == "tw" else sok_trajs
    skills = tw_skills if which == "tw" else DeterministicSummarizer().summarize(sok_trajs)
    values = instance_values(trajs)
    assert values  # the check below has something to find
    for s in skills:
        assert s.kind in KINDS
        assert body_tokens(s.body) <= MAX_BODY_TOKENS, (s.name, body_tokens(s.body))
        assert not leaked_values(s.body + " " + s.description, values), (s.name, s.body)
        assert "<tool_call>" not in s.body and "<answer>" not in s.body and "```" not in s.body


def test_instance_values_keep_template_constants_out():
    a = scripted_episode(TW, seed=1, options={"template": "wifi_password"})
    b = scripted_episode(TW, seed=2, options={"template": "wifi_password"})
    vals = instance_values([a, b])
    assert "WiFi password" not in vals  # every task searches for it: part of the template
    assert any(v.startswith("/documents/") for v in vals)
    # one task played twice (two policies, one seed): all its values are instance values
    assert "WiFi password" in instance_values([a, scripted_episode(TW, seed=1, options={"template": "wifi_password"})])


def test_body_bound_is_checked():
    assert check_body("First call x__y().") is None
    assert "tokens" in check_body("word " * (MAX_BODY_TOKENS + 5))
    assert "values of the source episodes" in check_body("Search for 'Gym 4'.", {"Gym 4"})


# ---- the interface and the LLM summarizer ------------------------------------------------------

class _Tok:
    def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=True):
        return [1, 2, 3]


class FakePolicy:
    model_id = "fake:canned"

    def __init__(self, outputs, error=None):
        self.tokenizer, self.outputs, self.error = _Tok(), list(outputs), error

    def generate(self, prompts, params):
        if self.error is not None:
            raise self.error
        return [Generation(token_ids=[1], logprobs=[0.0], text=self.outputs.pop(0), finish_reason="stop")]


def test_both_summarizers_share_the_interface(sok_trajs):
    good = json.dumps([{"name": "one-reply", "description": "Use on every board.", "kind": "workflow",
                        "body": "Send every move in your first reply inside answer tags."}])
    llm = LLMSummarizer(FakePolicy([good]))
    for summ in (DeterministicSummarizer(), llm):
        assert isinstance(summ, Summarizer) and summ.name
        skills = summ.summarize(sok_trajs, "Sokoban-Easy-v0")
        assert skills and all(isinstance(s, Skill) for s in skills)
    assert llm.name == "summarize-v2" and llm.last.prompt == "summarize-v2"


def test_llm_bodies_with_episode_values_or_too_long_are_rejected(tw_trajs):
    t = next(t for t in tw_trajs if t.meta["template"] == "event_date")
    title = json.loads(t.turns[0].action_text.split("<tool_call>")[1].split("</tool_call>")[0])["arguments"]["query"]
    items = [{"name": "leaky", "description": "Use when asked a date.", "kind": "workflow",
              "body": f"Search for '{title}' then answer."},
             {"name": "long", "description": "Use always.", "kind": "convention", "body": "call it " * 60},
             {"name": "good", "description": "Use when asked a date.", "kind": "workflow",
              "body": "First call calendar__search_events(query=<the quoted text from the task>)."}]
    res = summarize_llm(FakePolicy([json.dumps(items)]), tw_trajs, TW)
    assert [s.name for s in res.skills] == ["good"]
    assert any("values of the source episodes" in r for r in res.rejected)
    assert any("tokens; a rule takes at most" in r for r in res.rejected)


def test_llm_summarizer_plumbing_on_a_tiny_random_model(tok, sok_trajs, one_thread):
    """The in-process path (an HFPolicy, as the trainer's own model): the prompt renders with the
    tokenizer's chat template, generation runs, and whatever comes back is validated."""
    from agentsd.policy import HFPolicy
    from agentsd.policy.models import random_model

    policy = HFPolicy(random_model(tok, seed=0), tok, model_id="tiny-random")
    summ = LLMSummarizer(policy, retries=0, max_tokens=8, temperature=0.0)
    skills = summ.summarize(sok_trajs[:4], "Sokoban-Easy-v0")
    assert skills == [] and summ.last.rejected and len(summ.last.raw) == 1  # gibberish: rejected


# ---- bad input ------------------------------------------------------------------------------

def test_unreachable_summarizer_is_one_line_and_keeps_the_library(tmp_path, sok_trajs, capsys, monkeypatch):
    httpx = pytest.importorskip("httpx")
    with pytest.raises(SummarizerUnavailable, match="cannot be reached.*--summarizer deterministic") as e:
        summarize_llm(FakePolicy([], error=httpx.ConnectError("connection refused")), sok_trajs, "Sokoban-Easy-v0")
    assert "\n" not in str(e.value)
    # the CLI: a library built before is left exactly as it was
    src = tmp_path / "t.jsonl"
    src.write_text("".join(json.dumps(t.to_dict()) + "\n" for t in sok_trajs[:12]))
    lib_dir = tmp_path / "lib"
    assert cli_main(["skills", "build", "--env", "Sokoban-Easy-v0", "--from", str(src), "--out", str(lib_dir)]) == 0
    before = {p: p.read_text() for p in lib_dir.rglob("*") if p.is_file()}
    src.write_text("".join(json.dumps(t.to_dict()) + "\n" for t in sok_trajs))
    rc = cli_main(["skills", "build", "--env", "Sokoban-Easy-v0", "--from", str(src), "--out", str(lib_dir),
                   "--summarizer", "llm", "--backend", "openai", "--model", "smollm2",
                   "--base-url", "http://127.0.0.1:9/v1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "cannot be reached" in err[0] and "deterministic" in err[0]
    assert {p: p.read_text() for p in lib_dir.rglob("*") if p.is_file()} == before


def test_empty_or_unreadable_library_folder(tmp_path, monkeypatch):
    assert len(load_library(tmp_path)) == 0  # an empty folder is a library with no skills
    with pytest.raises(SkillError, match="no <env>/<skill>/SKILL.md files; build them with"):
        load_library(tmp_path, allow_empty=False)
    with pytest.raises(SkillError, match="does not exist; build one"):
        load_library(tmp_path / "missing")
    locked = tmp_path / "locked"
    locked.mkdir()

    def denied(self):
        raise PermissionError(13, "Permission denied", str(self))

    # as root chmod cannot lock a folder; the same error, raised where the listing happens
    monkeypatch.setattr(type(locked), "iterdir", denied)
    with pytest.raises(SkillError, match="cannot be read.*Permission denied.*fix its permissions"):
        load_library(locked)


def test_invalid_skill_file_is_named_and_the_rest_load(tmp_path):
    good = Skill("finish", "Use when done.", "Sokoban-v0", "convention", "Reply in answer tags.")
    lib = SkillLibrary([good, Skill("other", "Use always.", "Sokoban-v0", "pitfall", "Do not bump walls.")])
    lib.save(tmp_path)
    bad = tmp_path / "Sokoban-v0" / "other" / "SKILL.md"
    bad.write_text(bad.read_text().replace("kind: pitfall", "kind: hint"))
    with pytest.raises(SkillError, match=r"other/SKILL.md: kind must be one of.*fix or delete the file"):
        load_library(tmp_path)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        loaded = load_library(tmp_path, strict=False)
    assert [s.name for s in loaded] == ["finish"]
    assert any("other/SKILL.md" in str(x.message) and "fix or delete" in str(x.message) for x in w)
    assert bad.read_text().count("kind: hint") == 1  # never rewritten


def test_refresh_without_new_trajectories_is_a_no_op(sok_trajs):
    lib = SkillLibrary()
    summ = DeterministicSummarizer(now="2026-01-01T00:00:00+00:00")
    first = refresh(lib, sok_trajs, summ, "Sokoban-Easy-v0")
    assert first.added and len(first.summarized) == len(sok_trajs)
    snapshot = [render_skill_md(s) for s in lib]
    again = refresh(lib, sok_trajs, summ, "Sokoban-Easy-v0", seen=first.summarized)
    assert not again.added and not again.summarized
    assert again.message == ("Sokoban-Easy-v0: no new trajectories to summarize (every one was summarized "
                             "before); the library is unchanged")
    assert [render_skill_md(s) for s in lib] == snapshot


def test_names_detail_writes_workflows_as_tool_names_in_order(tw_trajs, tw_skills):
    names = DeterministicSummarizer(now="2026-01-01T00:00:00+00:00",
                                    workflow_detail="names").summarize(tw_trajs, TW)
    flows = {s.name: s for s in names if s.kind == "workflow"}
    full = {s.name: s for s in tw_skills if s.kind == "workflow"}
    assert flows and flows.keys() == full.keys()
    for name, s in flows.items():
        # no placeholder for the model to copy into a call, the same calls in the same order
        assert "<" not in s.body and "=" not in s.body and "(" not in s.body, s.body
        assert s.body.startswith(("First call ", "Call "))
        called = [w.strip(" ,.") for w in s.body.replace("First call ", "").replace("Call ", "")
                  .split(", then ")]
        first_full = full[name].body.replace("First call ", "").replace("Call ", "").split("(")[0]
        assert called[0] == first_full.strip(" ,.")


def test_unknown_workflow_detail_is_refused(tw_trajs):
    from agentsd.skills.summarize import summarize_deterministic

    with pytest.raises(ValueError, match="workflow_detail must be one of"):
        summarize_deterministic(tw_trajs, TW, workflow_detail="prose")
