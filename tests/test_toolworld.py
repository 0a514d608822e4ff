"""ToolWorld: APIs and schemas, world generation, grading, gold replay, traps, fuzzing.

The full gold sweep (50 seeds per template at every difficulty that draws it) is behind
``-m slow``; the default run replays 3 seeds per template and difficulty.
"""

from __future__ import annotations

import json
import pickle
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import agentsd
from agentsd.envs.toolworld import TEMPLATES, ToolWorldEnv, replay_gold, validate
from agentsd.envs.toolworld.api import APIS, APPS, AppError, api_docs, call_api
from agentsd.envs.toolworld.env import LEVELS
from agentsd.envs.toolworld.grader import answers_match
from agentsd.envs.toolworld.world import SIZES, diff_worlds, generate_world

IDS = {"easy": "ToolWorld-Easy-v0", "medium": "ToolWorld-v0", "hard": "ToolWorld-Hard-v0"}


def tool_msg(name: str, **args) -> dict:
    return {"role": "assistant", "content": "", "tool_calls": [
        {"id": "t1", "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}]}


def hermes(name: str, **args) -> str:
    return f'<tool_call>{json.dumps({"name": name, "arguments": args})}</tool_call>'


def result_of(obs: list[dict]) -> dict:
    """The first call's result payload, from a ``tool`` message or a ``<tool_response>`` block."""
    if obs[0]["role"] == "tool":
        return json.loads(obs[0]["content"])
    block = re.search(r"<tool_response>\n(.*?)\n</tool_response>", obs[0]["content"], re.DOTALL).group(1)
    return json.loads(block)["content"]


def fresh(template: str, seed: int = 0, difficulty: str = "medium") -> ToolWorldEnv:
    env = ToolWorldEnv(difficulty=difficulty, task_split="all", template=template)
    env.reset(seed=seed)
    return env


def login(env: ToolWorldEnv, app: str) -> str:
    pw = env.world.passwords[app]
    obs, *_ = env.step(tool_msg(f"{app}__login", username=env.world.user["email"], password=pw))
    return result_of(obs)["result"]["access_token"]


# ---- APIs, schemas, docs ------------------------------------------------------------------------

def test_at_least_40_typed_apis_across_apps_with_generated_schemas():
    assert len(APIS) >= 40 and len(APPS) >= 6
    env = ToolWorldEnv()
    schemas = env.openai_tools()
    assert {s["function"]["name"] for s in schemas} == set(APIS) | {"api_docs", "complete_task"}
    for s in schemas:
        fn = s["function"]
        assert re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", fn["name"])
        props = fn["parameters"]["properties"]
        assert set(fn["parameters"]["required"]) <= set(props)
        assert all("type" in p and "description" in p for p in props.values())
        if fn["name"] in APIS:  # one source of truth: the schema is the declaration
            a = APIS[fn["name"]]
            assert list(props) == [p.name for p in a.all_params()]
    assert any(a.auth for a in APIS.values()) and any(a.mutates for a in APIS.values())


def test_api_docs_lists_apps_apis_and_signatures():
    ok, text = api_docs()
    assert ok and all(app in text for app in APPS)
    ok, text = api_docs("bank")
    assert ok and "bank__send_payment" in text and "email__" not in text
    ok, text = api_docs("bank", "send_payment")
    assert ok and "receiver_email" in text and "amount (number, required)" in text and "login" in text
    assert api_docs("nope")[0] is False and api_docs("bank", "nope")[0] is False
    env = fresh("contact_phone")
    obs, *_ = env.step(hermes("api_docs", app="calendar", api="create_event"))
    assert obs[0]["role"] == "user" and "attendees" in obs[0]["content"]


def test_app_errors_come_back_as_results_and_the_episode_goes_on():
    env = fresh("pay_contact")
    cases = [
        (tool_msg("bank__show_balance", access_token="forged"), "permission_denied"),
        (tool_msg("contacts__show_contact", contact_id=99999), "not_found"),
        (tool_msg("calendar__search_events", start_date="2025-02-30"), "invalid_argument"),
        (tool_msg("contacts__search_contacts", page=0), "invalid_argument"),
        (tool_msg("email__login", username=env.world.user["email"], password="guess"), "permission_denied"),
    ]
    for action, kind in cases:
        obs, reward, terminated, truncated, info = env.step(action)
        assert obs[0]["role"] == "tool" and obs[0]["tool_call_id"] == "t1"
        assert result_of(obs)["error"]["type"] == kind, (action, obs)
        assert not terminated and info["api_errors"] == 1 and info["parse"] == "ok"
    tok = login(env, "bank")
    obs, *_ = env.step(tool_msg("bank__send_payment", access_token=tok, receiver_email="x@y.example", amount=1e9))
    assert result_of(obs)["error"]["type"] == "invalid_argument"
    obs, *_ = env.step(tool_msg("bank__send_payment", access_token=tok, receiver_email="x@y.example",
                                amount=999_999.0))
    assert result_of(obs)["error"]["type"] == "insufficient_funds"
    req = next(r for r in env.world.tables["payment_requests"].values() if r["status"] != "pending")
    obs, *_ = env.step(tool_msg("bank__approve_payment_request", access_token=tok, request_id=req["id"]))
    assert result_of(obs)["error"]["type"] == "conflict"
    assert diff_worlds(env.before, env.world).empty()  # failed calls change nothing


def test_pagination_and_logout():
    env = fresh("count_unread")
    tok = login(env, "email")
    r1 = result_of(env.step(tool_msg("email__search_emails", access_token=tok, folder="all"))[0])["result"]
    assert r1["total_results"] == len(env.world.tables["emails"]) and len(r1["results"]) == env.world.page_size
    seen = set()
    for page in range(1, r1["total_pages"] + 1):
        r = result_of(env.step(tool_msg("email__search_emails", access_token=tok, folder="all", page=page))[0])
        seen |= {e["id"] for e in r["result"]["results"]}
    assert seen == set(env.world.tables["emails"])
    env.step(tool_msg("email__logout", access_token=tok))
    obs, *_ = env.step(tool_msg("email__search_emails", access_token=tok))
    assert result_of(obs)["error"]["type"] == "permission_denied"


def test_text_actions_get_one_user_message_and_parse_errors_are_reported():
    env = fresh("contact_phone")
    obs, _, _, _, info = env.step(hermes("supervisor__show_profile") + hermes("supervisor__show_current_datetime"))
    assert len(obs) == 1 and obs[0]["role"] == "user" and obs[0]["content"].count("<tool_response>") == 2
    for bad, status in [("I think the answer is 4", "no_action"), ("<answer>4</answer>", "invalid_action"),
                        ('<tool_call>{"name": "contacts__show_contact", "arguments": {"contact_id": "x"}}</tool_call>',
                         "bad_arguments"), (hermes("rm_rf"), "unknown_tool")]:
        obs, reward, terminated, _, info = env.step(bad)
        assert info["parse"] == status and reward < 0 and not terminated and "Error" in obs[0]["content"]


# ---- world generation -----------------------------------------------------------------------------

def test_world_is_deterministic_per_seed_and_scales_with_difficulty():
    a = generate_world(np.random.default_rng(5), SIZES["medium"])
    b = generate_world(np.random.default_rng(5), SIZES["medium"])
    c = generate_world(np.random.default_rng(6), SIZES["medium"])
    assert a.tables == b.tables and a.user == b.user and a.tables != c.tables
    sizes = [len(generate_world(np.random.default_rng(0), SIZES[d]).tables["emails"]) for d in LEVELS]
    assert sizes == sorted(sizes) and sizes[0] < sizes[-1]
    copy = a.copy()
    copy.tables["contacts"][1]["phone"] = "changed"
    assert a.tables["contacts"][1]["phone"] != "changed"  # the copy is deep


def test_difficulty_knob_changes_prompt_levels_and_world():
    easy, hard = ToolWorldEnv(difficulty="easy"), ToolWorldEnv(difficulty="hard")
    (e_sys, _), _ = easy.reset(seed=1)
    (h_sys, _), _ = hard.reset(seed=1)
    assert "bank__send_payment(access_token: string" in e_sys["content"]
    assert "bank__send_payment" not in h_sys["content"] and "api_docs" in h_sys["content"]
    assert all(TEMPLATES[n].level == 1 for n in easy.pool)
    assert all(TEMPLATES[n].level >= 2 for n in hard.pool)
    assert len(hard.world.tables["contacts"]) > len(easy.world.tables["contacts"])


# ---- splits and registration ----------------------------------------------------------------------

def test_test_split_holds_out_whole_templates():
    train = {t.name for t in TEMPLATES.values() if t.split == "train"}
    test = {t.name for t in TEMPLATES.values() if t.split == "test"}
    assert len(TEMPLATES) >= 30 and test and not train & test
    for env_id in IDS.values():
        s = agentsd.spec(env_id)
        assert s.splits["test"].kwargs == {"task_split": "test"}
        seen = set()
        env = agentsd.make(env_id, split="test")
        for seed in agentsd.split_seeds(env_id, "test", 12):
            _, info = env.reset(seed=seed)
            seen.add(info["template"])
        assert seen <= test and seen
        env = agentsd.make(env_id, split="train")
        assert set(env.unwrapped.pool) <= train


def test_gold_fits_the_turn_limit_and_levels_match_length():
    for d, env_id in IDS.items():
        limit = agentsd.spec(env_id).max_turns
        env = ToolWorldEnv(difficulty=d, task_split="all")
        for name in env.pool:
            for seed in range(3):
                env.reset(seed=seed, options={"template": name})
                assert len(env.gold) <= limit - 5, (d, name, len(env.gold))
    env = ToolWorldEnv(task_split="all")
    lengths = {}
    for name in env.pool:
        env.reset(seed=0, options={"template": name})
        lengths.setdefault(TEMPLATES[name].level, []).append(len(env.gold))
    assert max(lengths[1]) <= 6 and min(lengths[3]) >= 6


# ---- gold replay ----------------------------------------------------------------------------------

def _sweep(seeds: range) -> list[str]:
    return [f for d in LEVELS for name, t in TEMPLATES.items() if t.level in LEVELS[d]
            for f in validate(name, seeds, d)]


def test_replay_reports_reward_and_success_through_step():
    env = fresh("pay_back_dinner", seed=5)
    g, info = replay_gold(env)
    assert g.success and info["success"] and info["reward_terms"]["task"] == 1.0 and info["partial_credit"] == 1.0


def test_gold_replay_scores_full_marks_small_sweep():
    assert _sweep(range(3)) == []


@pytest.mark.slow
def test_gold_replay_scores_full_marks_50_seeds_per_template():
    assert _sweep(range(50)) == []


def test_oracle_through_registered_ids_and_next_step_tracks_progress():
    env = agentsd.make("ToolWorld-v0", seed=4)
    env.reset()
    p0 = env.privileged()
    assert p0.next_step == p0.plan[0] and p0.solution.count("\n") == len(p0.plan) - 1
    action = env.oracle_action()
    assert action["tool_calls"][0]["function"]["name"] == json.loads(p0.plan[0])["name"]
    env.step(action)
    assert env.privileged().next_step == p0.plan[1]


# ---- grading: empty, random, half-done, collateral -------------------------------------------------

def test_empty_agent_fails_every_template_with_no_credit():
    for name in TEMPLATES:
        env = fresh(name, seed=1)
        _, reward, terminated, _, info = env.step(tool_msg("complete_task"))
        assert terminated and reward == 0.0 and info["success"] is False, name
        assert info["partial_credit"] == 0.0, (name, info["grade"])


def _random_value(rng: np.random.Generator, spec: dict):
    t = spec["type"]
    if "enum" in spec:
        return spec["enum"][int(rng.integers(len(spec["enum"])))]
    if t == "integer":
        return int(rng.integers(-2, 60))
    if t == "number":
        return float(np.round(rng.uniform(-10, 500), 2))
    if t == "boolean":
        return bool(rng.integers(2))
    if t == "array":
        return [f"{w}@mail.example" for w in ("a", "b")[: int(rng.integers(3))]]
    return str(rng.choice(["", "a", "Alice", "/downloads", "2025-03-01", "2025-03-01T10:00", "x@y.example"]))


def test_random_agent_scores_near_zero():
    env = agentsd.make("ToolWorld-v0")
    rng = np.random.default_rng(0)
    tools = [t.to_openai()["function"] for t in env.tools]
    wins, episodes = 0, 60
    for seed in range(episodes):
        env.reset(seed=seed)
        for _ in range(12):
            fn = tools[int(rng.integers(len(tools) - 1))]  # any tool but complete_task
            args = {k: _random_value(rng, v) for k, v in fn["parameters"]["properties"].items()
                    if k in fn["parameters"]["required"] or rng.random() < 0.3}
            env.step(tool_msg(fn["name"], **args))
        _, _, _, _, info = env.step(tool_msg("complete_task", answer=str(rng.integers(10))))
        wins += info["success"]
    assert wins / episodes <= 0.05


HALF_TEMPLATES = ["pay_back_dinner", "notes_to_file_and_email", "postpone_and_notify", "pay_and_confirm",
                  "approve_requests_from", "delete_emails_from"]


@pytest.mark.parametrize("name", HALF_TEMPLATES)
def test_doing_half_the_workflow_gets_partial_credit_and_fails(name):
    env = fresh(name, seed=2)
    writes = [i for i, g in enumerate(env.gold) if g.name in APIS and APIS[g.name].mutates]
    assert len(writes) >= 2
    stop = writes[len(writes) // 2]  # replay up to (not including) the middle write
    for g in env.gold[:stop]:
        env.step(tool_msg(g.name, **g.arguments))
    _, reward, terminated, _, info = env.step(tool_msg("complete_task"))
    assert terminated and not info["success"] and reward == 0.0
    assert 0.0 < info["partial_credit"] < 1.0, info["grade"]


def test_collateral_damage_fails_an_otherwise_correct_run():
    env = fresh("update_contact_phone", seed=3)
    for g in env.gold[:-1]:
        env.step(tool_msg(g.name, **g.arguments))
    victim = next(k for k in env.world.tables["notes"])
    env.step(tool_msg("notes__delete_note", note_id=victim))
    _, reward, _, _, info = env.step(tool_msg("complete_task"))
    assert info["grade"]["checks_passed"] == info["grade"]["checks_total"]  # the asked change is there
    assert not info["success"] and reward == 0.0
    assert info["grade"]["collateral_damage"] == [f"removed notes[{victim}]"]
    # changing another field of the record the task touches is collateral damage too
    env = fresh("update_contact_phone", seed=3)
    for g in env.gold[:-1]:
        args = dict(g.arguments, relationship="family") if g.name == "contacts__update_contact" else g.arguments
        env.step(tool_msg(g.name, **args))
    _, _, _, _, info = env.step(tool_msg("complete_task"))
    before = env.before.tables["contacts"][env.gold[-2].arguments["contact_id"]]["relationship"]
    assert info["success"] is (before == "family")


def test_traps_namesakes_and_same_title_events():
    env = fresh("contact_phone", seed=0, difficulty="hard")
    first, last = env.params["name"].split()
    namesakes = [c for c in env.world.tables["contacts"].values() if c["first_name"] == first]
    assert len(namesakes) >= 2  # hard worlds always plant a namesake
    wrong = next(c["phone"] for c in namesakes if c["last_name"] != last)
    _, _, _, _, info = env.step(tool_msg("complete_task", answer=wrong))
    assert not info["success"]
    env = fresh("delete_event", seed=0)
    other = next(e["id"] for e in env.world.tables["events"].values()
                 if e["title"] == env.params["title"] and e["id"] != env.params["id"])
    env.step(tool_msg("calendar__delete_event", event_id=other))
    _, _, _, _, info = env.step(tool_msg("complete_task"))
    assert not info["success"] and info["grade"]["collateral_damage"]


def test_answers_match_rules():
    assert answers_match("$1,204.50", 1204.5, "number") and answers_match("It is 7.", 7, "number")
    assert not answers_match("12", 7, "number") and not answers_match("none", 7, "number")
    assert answers_match("  alice BAUER. ", "Alice Bauer", "text") and not answers_match("Alice", "Alice Bauer", "text")
    assert answers_match("b, a", ["a", "b"], "list") and not answers_match("a", ["a", "b"], "list")


def test_partial_reward_option_pays_partial_credit():
    env = ToolWorldEnv(task_split="all", template="pay_back_dinner", partial_reward=True)
    env.reset(seed=0)
    writes = [i for i, g in enumerate(env.gold) if g.name == "bank__send_payment"]
    for g in env.gold[: writes[0] + 1]:
        env.step(tool_msg(g.name, **g.arguments))
    _, reward, _, _, info = env.step(tool_msg("complete_task"))
    assert reward == pytest.approx(info["partial_credit"]) and 0 < reward < 1


# ---- privileged views stay private; copies behave ---------------------------------------------------

def test_privileged_views_never_reach_observations():
    for name in TEMPLATES:
        env = fresh(name, seed=0)
        (sys_msg, user_msg), _ = env.reset(seed=0)
        p = env.privileged()
        text = sys_msg["content"] + user_msg["content"]
        assert p.plan and p.notes and all(step not in text for step in p.plan)
        if p.answer and len(p.answer) > 3:
            assert p.answer not in user_msg["content"], name


def test_pickle_mid_episode_keeps_state():
    env = fresh("pay_contact", seed=1)
    for g in env.gold[:3]:
        env.step(tool_msg(g.name, **g.arguments))
    clone = pickle.loads(pickle.dumps(env))
    rest = env.gold[3:]
    for e in (env, clone):
        for g in rest:
            _, _, terminated, _, info = e.step(tool_msg(g.name, **g.arguments))
        assert terminated and info["success"]


# ---- fuzzing: bad names, bad JSON, wrong types, huge strings ----------------------------------------

_values = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10 ** 30), max_value=10 ** 30),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=40),
                    st.just("x" * 6000), st.lists(st.text(max_size=10), max_size=3),
                    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
                    st.sampled_from(["2025-02-30", "2025-03-01T25:00", "/../etc", "a@b.co", "", " "]))
KNOWN = set(APIS) | {"api_docs", "complete_task"}
_names = st.one_of(st.sampled_from(sorted(APIS) + ["api_docs", "complete_task"]), st.text(max_size=30))


def _fuzz_args(name: str) -> st.SearchStrategy:
    a = APIS.get(name)
    keys = ([p.name for p in a.all_params()] if a else ["app", "api", "answer"]) + ["unexpected"]
    return st.dictionaries(st.sampled_from(keys), _values, max_size=len(keys))


_calls = _names.flatmap(lambda n: st.tuples(st.just(n), _fuzz_args(n)))


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(_calls, min_size=1, max_size=6), st.sampled_from(["msg", "text", "rawjson"]), st.integers(0, 30))
def test_fuzzed_tool_calls_never_raise_and_return_errors(calls, form, seed):
    env = ToolWorldEnv(difficulty="easy", task_split="all")  # the small world: resets are cheap
    env.reset(seed=seed)
    for name, args in calls:
        try:
            payload = json.dumps(args, allow_nan=True)
        except (TypeError, ValueError):
            payload = "{"
        if form == "msg":
            action = {"role": "assistant", "content": None, "tool_calls": [
                {"id": "f", "type": "function", "function": {"name": name, "arguments": payload}}]}
        elif form == "text":
            action = f'<tool_call>{{"name": {json.dumps(name)}, "arguments": {payload}}}</tool_call>'
        else:
            action = f"<tool_call>{payload}</tool_call>"
        obs, reward, terminated, truncated, info = env.step(action)
        assert isinstance(obs, list) and obs and np.isfinite(reward)
        text = json.dumps(obs)
        if form == "rawjson" or name not in KNOWN:  # no valid call: a parse error, said so
            assert info["parse"] != "ok" and "Error" in obs[0]["content"], (action, obs)
        elif info["parse"] == "ok" and name in APIS:  # a real call: a result or an app error
            body = result_of(obs)
            assert ("result" in body) != ("error" in body)
            if "error" in body:
                assert info["api_errors"] == 1 and body["error"]["type"] in AppError.KINDS
        assert len(text) < 50_000
        if terminated:
            break


_FUZZ_WORLD = generate_world(np.random.default_rng(0), SIZES["easy"])


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(sorted(APIS)), st.data())
def test_every_api_rejects_wrong_types_cleanly(name, data):
    """Type-correct but hostile values straight into call_api: every outcome is a result or an app
    error, never an exception (call_api only converts AppError, so a crash would surface here)."""
    w = _FUZZ_WORLD.copy()
    a = APIS[name]
    args = {}
    for p in a.all_params():
        if p.type == "integer":
            args[p.name] = data.draw(st.integers(min_value=-(10 ** 20), max_value=10 ** 20))
        elif p.type == "number":
            args[p.name] = data.draw(st.floats(allow_nan=False, allow_infinity=False, width=64))
        elif p.type == "boolean":
            args[p.name] = data.draw(st.booleans())
        elif p.type == "array":
            args[p.name] = data.draw(st.lists(st.text(max_size=30), max_size=3))
        elif p.enum:
            args[p.name] = data.draw(st.sampled_from(list(p.enum)))
        else:
            args[p.name] = data.draw(st.text(max_size=60))
    if a.auth and data.draw(st.booleans()):
        args["access_token"] = w.token_for(a.app)
        w.sessions[args["access_token"]] = a.app
    r = call_api(w, name, args)
    assert r.ok or r.error_kind in ("not_found", "permission_denied", "insufficient_funds", "invalid_argument",
                                    "conflict")
    json.dumps(r.payload())


# ---- CLI and script smoke runs ----------------------------------------------------------------------

def test_cli_play_with_the_oracle_policy():
    import io

    from agentsd.cli_basic import play_episode

    out = io.StringIO()
    summary = play_episode("ToolWorld-Hard-v0", seed=7, policy="oracle", out=out)
    assert summary["success"] and '"tool_calls"' in out.getvalue() and "[tool]" in out.getvalue()


def test_bench_script_smoke(capsys):
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parents[1] / "scripts" / "bench_toolworld.py"
    spec = importlib.util.spec_from_file_location("bench_toolworld", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["--episodes", "2", "--repeats", "1", "--difficulty", "easy"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert rows[-1]["difficulty"] == "easy" and rows[-1]["step_calls_per_s"] > 0
