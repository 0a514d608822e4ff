"""The ToolWorld env: one task in one generated world per episode, acted on by tool calls.

Each step takes OpenAI ``tool_calls`` or Hermes ``<tool_call>`` text (parsed by the shared
:func:`agentsd.tools.parse_action` against schemas generated from the API declarations), runs
up to ``max_calls_per_turn`` calls in order and returns their results: ``role: "tool"`` messages
for a ``tool_calls`` message, one ``user`` message of ``<tool_response>`` blocks for text. App
errors come back as results and the episode goes on. ``complete_task`` ends it and grades the
world against the template's expectation (reward 1 on success; ``info["grade"]`` holds every
check and the partial credit).
"""

from __future__ import annotations

import json
from typing import Any

from agentsd.env import TextEnv
from agentsd.envs.toolworld.api import APIS, APPS, api_docs, call_api
from agentsd.envs.toolworld.grader import Grade, grade
from agentsd.envs.toolworld.tasks import TEMPLATES, Client, GoldCall, Template, templates_for
from agentsd.envs.toolworld.world import SIZES, World, generate_world
from agentsd.tools import ParsedAction, Tool, parse_action
from agentsd.types import ParseStatus, Privileged

__all__ = ["ToolWorldEnv", "LEVELS", "DOCS_TOOL", "COMPLETE_TOOL", "all_tools", "replay_gold",
           "replay_failures", "validate"]

#: task levels each difficulty draws from
LEVELS: dict[str, tuple[int, ...]] = {"easy": (1,), "medium": (1, 2, 3), "hard": (2, 3)}
#: what the system prompt lists about the APIs, per difficulty
API_LISTING: dict[str, str] = {"easy": "signatures", "medium": "names", "hard": "none"}

DOCS_TOOL = Tool("api_docs", "Read the API documentation: no arguments lists the apps; app lists its APIs; "
                 "app and api show one API's parameters.",
                 {"app": {"type": "string", "description": "an app name", "default": ""},
                  "api": {"type": "string", "description": "an API name of that app", "default": ""}})
COMPLETE_TOOL = Tool("complete_task", "Finish the task. Give the answer when the task asks a question.",
                     {"answer": {"type": "string", "description": "the answer, if the task asks for one",
                                 "default": ""}})


def all_tools() -> tuple[Tool, ...]:
    """Every tool the agent can call: the app APIs, ``api_docs`` and ``complete_task``."""
    return tuple(a.tool() for a in APIS.values()) + (DOCS_TOOL, COMPLETE_TOOL)


def _system_prompt(listing: str, max_calls: int) -> str:
    lines = [
        "You operate a person's apps through API calls to complete their task. You act as that person.",
        "Apps: " + "; ".join(f"{n} ({d})" for n, d in APPS.items()) + ".",
        "Every app API is a tool named APP__API (for example contacts__search_contacts). Call api_docs() to "
        "list the apps, api_docs(app=\"email\") to list an app's APIs and api_docs(app=\"email\", "
        "api=\"send_email\") to see its parameters.",
        "To call a tool, write exactly:\n<tool_call>{\"name\": \"TOOL_NAME\", \"arguments\": {...}}</tool_call>\n"
        f"You may make up to {max_calls} calls in one reply; each result comes back inside <tool_response>.",
        "The email, bank and shop apps need a login: your username is your email address "
        "(supervisor__show_profile) and your passwords are in supervisor__show_account_passwords; pass the "
        "access_token from APP__login to the other calls. Search results come in pages: check total_pages.",
        "When you are done, call complete_task with answer=\"...\" if the task asks a question (just the "
        "answer), or with no answer if it only asks for changes. Do only what the task asks: any other "
        "change to the apps counts as damage.",
    ]
    if listing == "signatures":
        lines.append("Tools:\n" + "\n".join(a.signature() for a in APIS.values())
                     + "\napi_docs(app: string = '', api: string = '')\ncomplete_task(answer: string = '')")
    elif listing == "names":
        lines.append("Tools: " + ", ".join(APIS) + ", api_docs, complete_task.")
    return "\n\n".join(lines)


def _canon(name: str, args: dict[str, Any]) -> str:
    """A call with defaults filled in, so ``page=1`` and no page compare equal."""
    a = APIS.get(name)
    if a is not None:
        args = {p.name: args.get(p.name, p.default) for p in a.all_params()}
    return json.dumps([name, args], sort_keys=True, default=str)


class ToolWorldEnv(TextEnv):
    """An AppWorld-style world of eight stateful apps (see the package docstring)."""

    max_action_chars = 20_000
    #: the templates this env can draw and grade by name (ToolWorld-Lite adds its own)
    catalog: dict[str, Template] = TEMPLATES

    def __init__(self, difficulty: str = "medium", task_split: str = "train", template: str | None = None,
                 levels: tuple[int, ...] | list[int] | None = None, api_listing: str | None = None,
                 max_calls_per_turn: int = 5, format_penalty: float = -0.1, partial_reward: bool = False,
                 max_result_chars: int = 6000, render_mode: str | None = None) -> None:
        super().__init__(render_mode)
        if difficulty not in LEVELS:
            raise ValueError(f"difficulty must be one of {sorted(LEVELS)}, got {difficulty!r}")
        if task_split not in ("train", "test", "all"):
            raise ValueError(f"task_split must be 'train', 'test' or 'all', got {task_split!r}")
        if template is not None and template not in self.catalog:
            raise ValueError(f"unknown template {template!r}; known: {', '.join(self.catalog)}")
        if api_listing not in (None, "signatures", "names", "none"):
            raise ValueError(f"api_listing must be 'signatures', 'names' or 'none', got {api_listing!r}")
        if not isinstance(max_calls_per_turn, int) or max_calls_per_turn < 1:
            raise ValueError(f"max_calls_per_turn must be a positive int, got {max_calls_per_turn!r}")
        self.difficulty, self.task_split = difficulty, task_split
        self.levels = tuple(levels) if levels is not None else LEVELS[difficulty]
        self.pool = [template] if template else [t.name for t in templates_for(task_split, self.levels)]
        if not self.pool:
            raise ValueError(f"no templates in split {task_split!r} at levels {self.levels}")
        self.api_listing = api_listing or API_LISTING[difficulty]
        self.max_calls_per_turn = max_calls_per_turn
        self.format_penalty = float(format_penalty)
        self.partial_reward = bool(partial_reward)
        self.max_result_chars = max_result_chars
        self.tools = all_tools()
        self.world: World | None = None
        self.before: World | None = None
        self.template: str | None = None
        self.params: dict[str, Any] = {}
        self.gold: list[GoldCall] = []
        self.gold_answer: str | None = None
        self._done: list[bool] = []
        self._gold_keys: list[str] = []
        self.calls_made = 0
        self.last_grade: Grade | None = None

    # -- gym API ------------------------------------------------------------------------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed, options=options)
        rng = self.np_random
        name = (options or {}).get("template") or self.pool[int(rng.integers(len(self.pool)))]
        if name not in self.catalog:
            raise ValueError(f"unknown template {name!r} in options; known: {', '.join(self.catalog)}")
        tmpl = self.catalog[name]
        world = generate_world(rng, SIZES[self.difficulty])
        self.params = tmpl.setup(world, rng, self.difficulty)
        self.template, self.world, self.before = name, world, world.copy()
        self.gold, self.gold_answer = self._solve(tmpl)
        self._done = [False] * len(self.gold)
        self._gold_keys = [_canon(g.name, g.arguments) for g in self.gold]
        self.calls_made, self.last_grade = 0, None
        return self._prompt(tmpl), {"task_id": self.task_id, "template": name, "level": tmpl.level}

    def _prompt(self, tmpl: Template) -> list[dict]:
        """The episode's opening messages: the system prompt and the task."""
        return [self.system(_system_prompt(self.api_listing, self.max_calls_per_turn)),
                self.user(f"Task: {tmpl.instruction(self.params)}")]

    def _solve(self, tmpl: Template) -> tuple[list[GoldCall], str | None]:
        client = Client(self.before.copy())
        answer = tmpl.solve(client, self.params)
        finish = GoldCall("complete_task", {"answer": str(answer)} if answer is not None else {})
        return client.calls + [finish], None if answer is None else str(answer)

    def step(self, action: Any):
        assert self.world is not None, "call reset() first"
        parsed = parse_action(action, list(self.tools), max_chars=self.max_action_chars,
                              max_calls=self.max_calls_per_turn)
        if parsed.ok and not parsed.tool_calls:
            parsed = ParsedAction(ParseStatus.INVALID_ACTION, parsed.text, error=(
                "an <answer> tag does not finish the task here; call "
                '<tool_call>{"name": "complete_task", "arguments": {"answer": "..."}}</tool_call>'))
        if not parsed.ok:
            msg = (f"Error: {parsed.error}. Call tools as "
                   '<tool_call>{"name": ..., "arguments": {...}}</tool_call>.')
            info = self.info(parsed, format=self.format_penalty)
            info.update(task_id=self.task_id, api_errors=0)
            return self._reply(action, [msg]), self.format_penalty, False, False, info
        results, errors, grade_ = [], 0, None
        for call in parsed.tool_calls:
            if grade_ is not None:  # the calls after complete_task do not run
                results.append(json.dumps({"error": {"type": "invalid_argument",
                                                     "message": "not run: the task was already completed"}}))
                continue
            if call.name == "complete_task":
                grade_ = self._finish(call.arguments.get("answer", ""))
                results.append(json.dumps({"result": "task completed"}))
                continue
            ok, text = self._run(call.name, call.arguments)
            errors += not ok
            results.append(text)
        info = self.info(parsed, success=None if grade_ is None else grade_.success, task=self._reward(grade_))
        info.update(task_id=self.task_id, api_errors=errors, calls=self.calls_made)
        if grade_ is not None:
            info.update(grade=grade_.to_dict(), partial_credit=grade_.partial)
        reward = sum(info["reward_terms"].values())
        return self._reply(action, results, parsed), reward, grade_ is not None, False, info

    def _reward(self, g: Grade | None) -> float:
        if g is None:
            return 0.0
        return 1.0 if g.success else (g.partial if self.partial_reward else 0.0)

    def _run(self, name: str, args: dict[str, Any]) -> tuple[bool, str]:
        self.calls_made += 1
        if name == "api_docs":
            ok, text = api_docs(str(args.get("app", "")), str(args.get("api", "")))
            payload: dict[str, Any] = {"result": text} if ok else {"error": {"type": "not_found", "message": text}}
        else:
            r = call_api(self.world, name, args)
            ok, payload = r.ok, r.payload()
            if ok:
                self._mark(name, args)
        text = json.dumps(payload, ensure_ascii=False)
        if len(text) > self.max_result_chars:
            text = text[: self.max_result_chars] + " ...(truncated; ask for a smaller page or one item)"
        return ok, text

    def _mark(self, name: str, args: dict[str, Any]) -> None:
        key = _canon(name, args)
        for i, k in enumerate(self._gold_keys):
            if not self._done[i] and k == key:
                self._done[i] = True
                return

    def _finish(self, answer: Any) -> Grade:
        self._done[-1] = True  # the gold sequence always ends with complete_task
        exp = self.catalog[self.template].expect(self.before, self.params)
        self.last_grade = grade(self.before, self.world, exp, answer if answer != "" else None)
        return self.last_grade

    def _reply(self, action: Any, results: list[str], parsed: ParsedAction | None = None) -> list[dict]:
        raw = action.get("tool_calls") if isinstance(action, dict) else None
        if isinstance(raw, list) and raw:
            ids = [c.get("id") if isinstance(c, dict) else None for c in raw]
            names = [c.name for c in parsed.tool_calls] if parsed is not None else [None] * len(raw)
            if parsed is None:  # one parse error answers every call of the message
                results = results * len(ids)
            return [self.tool_result(r, i if isinstance(i, str) else None, n if isinstance(n, str) else None)
                    for r, i, n in zip(results, ids, names)]
        if parsed is None:
            return [self.user(results[0])]
        names = [c.name for c in parsed.tool_calls]
        blocks = [f'<tool_response>\n{{"name": {json.dumps(n)}, "content": {r}}}\n</tool_response>'
                  for n, r in zip(names, results)]
        return [self.user("\n".join(blocks))]

    def render(self) -> str | None:
        return None if self.world is None else f"{self.task_id}: {self.calls_made} calls made"

    # -- agentsd extras -----------------------------------------------------------------------
    @property
    def task_id(self) -> str | None:
        if self.template is None:
            return None
        return f"{self.template}-{self.difficulty}-{self.episode_seed}"

    def grade_now(self, answer: Any = None) -> Grade:
        """Grade the current world without ending the episode (for analysis and tests)."""
        return grade(self.before, self.world, self.catalog[self.template].expect(self.before, self.params), answer)

    def privileged(self) -> Privileged:
        if self.world is None:
            return Privileged()
        tmpl = self.catalog[self.template]
        exp = tmpl.expect(self.before, self.params)
        nxt = next((g.text() for g, d in zip(self.gold, self._done) if not d), None)
        wanted = [a.what for a in exp.added] + [r.what for r in exp.removed] + [c.what for c in exp.changed]
        notes = (f"Trap: {tmpl.notes}{self._namesake_note()} Required changes: "
                 f"{'; '.join(wanted) or 'none (answer only)'}. Anything else changed counts as collateral damage.")
        return Privileged(answer=self.gold_answer, solution="\n".join(g.text() for g in self.gold),
                          plan=[g.text() for g in self.gold], next_step=nxt, notes=notes,
                          extra={"gold_calls": len(self.gold), "level": tmpl.level},
                          construction=self._construction(tmpl, exp, wanted))

    def _construction(self, tmpl: Template, exp: Any, wanted: list[str]) -> list[str]:
        """π-Play's view: how the generator built this task, step by step (the world drawn from
        the seed, the template, the facts its setup planted, what the grader was set to check).
        Every step carries its own lead-in, so none equals a line the student is shown."""
        tables = ", ".join(f"{len(rows)} {name}" for name, rows in sorted(self.before.tables.items()))
        planted = json.dumps(self.params, sort_keys=True, ensure_ascii=False, default=str)
        checks = "; ".join(wanted) or "no change to the world"
        answer = "" if exp.answer is None else f"; the answer {exp.answer!r} ({exp.answer_kind})"
        return [f"Construction step 1: a world generated from the episode seed at the "
                f"{self.difficulty!r} size ({tables})",
                f"Construction step 2: template {tmpl.name!r} drawn (level {tmpl.level}, split "
                f"{tmpl.split!r}, apps {', '.join(tmpl.apps)})",
                f"Construction step 3: its setup planted these facts in the world: {planted}",
                f"Construction step 4: the task text written from those facts; the grader set to "
                f"check {checks}{answer}",
                f"Construction step 5: the template's trap: {tmpl.notes}"]

    def _namesake_note(self) -> str:
        name = self.params.get("name")
        if not isinstance(name, str) or " " not in name:
            return ""
        first = name.split()[0]
        others = sorted(f"{c['first_name']} {c['last_name']}" for c in self.before.tables["contacts"].values()
                        if c["first_name"] == first and f"{c['first_name']} {c['last_name']}" != name)
        return f" Namesakes in the contacts: {', '.join(others)} (not {name})." if others else ""

    def oracle_action(self) -> dict | None:
        """The next gold call as an assistant message with OpenAI ``tool_calls``."""
        if self.world is None:
            return None
        i = next((i for i, d in enumerate(self._done) if not d), None)
        if i is None:
            return None
        g = self.gold[i]
        return {"role": "assistant", "content": "", "tool_calls": [{
            "id": f"call_{self.calls_made}", "type": "function",
            "function": {"name": g.name, "arguments": json.dumps(g.arguments)}}]}

    def example_actions(self) -> list[Any]:
        return [
            '<tool_call>{"name": "api_docs", "arguments": {}}</tool_call>',
            '<tool_call>{"name": "api_docs", "arguments": {"app": "calendar"}}</tool_call>',
            {"role": "assistant", "content": "", "tool_calls": [{"id": "c1", "type": "function", "function": {
                "name": "supervisor__show_current_datetime", "arguments": "{}"}}]},
            '<tool_call>{"name": "bank__show_balance", "arguments": {"access_token": "wrong"}}</tool_call>',
            '<tool_call>{"name": "contacts__show_contact", "arguments": {"contact_id": "seven"}}</tool_call>',
            '<tool_call>{"name": "complete_task", "arguments": {"answer": "I do not know"}}</tool_call>',
        ]


def replay_gold(env: ToolWorldEnv) -> tuple[Grade, dict[str, Any]]:
    """Replay the current episode's gold calls through ``step`` (as OpenAI tool-call messages) and
    return the final grade and info: a template ships only when this passes for every seed."""
    info: dict[str, Any] = {}
    for g in list(env.gold):
        msg = {"role": "assistant", "content": "", "tool_calls": [
            {"id": "gold", "type": "function", "function": {"name": g.name, "arguments": json.dumps(g.arguments)}}]}
        _, _, terminated, _, info = env.step(msg)
        if info.get("api_errors"):
            raise AssertionError(f"gold call {g.text()} failed in {env.task_id}")
        if terminated:
            break
    assert env.last_grade is not None, f"gold of {env.task_id} never called complete_task"
    return env.last_grade, info


def validate(template: str, seeds: range | list[int], difficulty: str = "medium") -> list[str]:
    """Replay the gold solution of ``template`` for every seed; return the failures (empty when the
    template is sound: every gold call succeeds and the grade is full marks)."""
    return replay_failures(ToolWorldEnv(difficulty=difficulty, task_split="all", template=template),
                           seeds)


def replay_failures(env: ToolWorldEnv, seeds: range | list[int]) -> list[str]:
    """Reset ``env`` on every seed and replay its gold calls: the episodes whose gold run fails or
    scores less than full marks, each named by its task id."""
    failures = []
    for seed in seeds:
        env.reset(seed=seed)
        try:
            g, _ = replay_gold(env)
        except AssertionError as e:
            failures.append(f"{env.task_id}: {e}")
            continue
        if not g.success:
            failures.append(f"{env.task_id}: {g.to_dict()}")
    return failures
