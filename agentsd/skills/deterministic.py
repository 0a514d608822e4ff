"""The deterministic summarizer: trajectories to rules a model can follow, without a model.

From one env's trajectories (successes and failures, grouped by task template) it writes three
kinds of skill, each body a few imperative sentences bounded by
:data:`~agentsd.skills.guidance.MAX_BODY_TOKENS`, with placeholders instead of one episode's
values (statistics and provenance go to the front matter, never the body):

- a **workflow** per template: the calls the successful episodes made, in order, and where each
  argument came from (the task text, a field of an earlier result), e.g. ``First call
  supervisor__show_account_passwords(), then bank__login(username=<email from the
  supervisor__show_profile result>, password=<the bank password from the
  supervisor__show_account_passwords result>), then …``; for envs answered in text, the reply
  format and how many turns the solution takes. Without a success, the gold plan's calls;
- a **pitfall** per error the env returned most often: the error, quoted, and the call that
  avoids or fixes it (the same tool called the way successful episodes called it); and for a
  boolean ``info`` flag seen only in failures (Sokoban's ``deadlock``), the rule to avoid it;
- **conventions** every task follows: how to finish (``complete_task`` with or without an
  answer), a token that comes from a login result, ids passed as numbers, the answer format.

The same trajectories give the same skills (``now`` aside).

>>> from agentsd.skills.scripted import scripted_episode
>>> trajs = [scripted_episode("Sokoban-Easy-v0", seed=s, policy="oracle") for s in range(3)]
>>> wf = next(s for s in summarize_deterministic(trajs, now="2026-01-01") if s.kind == "workflow")
>>> wf.body.split(":")[0]
'Send the whole solution in your first reply'
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import difflib
import json
import logging
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from agentsd.skills.guidance import (
    MAX_BODY_TOKENS,
    SourcedCall,
    body_tokens,
    episode_calls,
    instance_values,
    leaked_values,
    parse_calls,
    task_key,
    task_text,
)
from agentsd.skills.library import MAX_SOURCE_IDS, Provenance, Skill, SkillStats
from agentsd.trajectory import Trajectory

__all__ = ["DETERMINISTIC_VERSION", "task_template", "action_signature", "normalize_feedback",
           "task_skeleton", "summarize_deterministic", "now_iso"]

log = logging.getLogger("agentsd.skills")
DETERMINISTIC_VERSION = "deterministic-v2"

#: a trailing instance number or hash (``-17``, ``/0``, ``/470473a755``) after a separator
_TRAILING_NUM_RE = re.compile(r"[-_/#:](?:\d+|(?=[0-9a-f]*\d)[0-9a-f]{6,})$")
_TOOL_RE = re.compile(r"<tool_call>\s*(\{.*?\})\s*(?:</tool_call>|$)", re.DOTALL)
_ANSWER_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL | re.IGNORECASE)
_CODE_RE = re.compile(r"```(\w*)\n", re.DOTALL)
_QUOTED_RE = re.compile(r"(['\"])(?:(?!\1).){1,80}\1")
_NUM_RE = re.compile(r"\d+(?:\.\d+)?")
_WORD_RE = re.compile(r"[A-Za-z][A-Za-z_]{2,}")
_STOP = frozenset("the and for you your with that this from are was were not has have had its "
                  "into onto then than when what which will would can could should use using "
                  "reply answer tool call calls turn turns move moves task first given result "
                  "inside worked out".split())
#: the wording of each action shape in a rule
_SHAPE_WORDS = {"answer": "answer tags", "code:python": "a python code block", "text": "plain text"}


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def task_template(traj: Trajectory) -> str:
    """The task template a trajectory belongs to: ``meta["template"]`` when the env or rollout
    recorded one, else the task id without its trailing number or hash (``sokoban-easy-3`` ->
    ``sokoban-easy``, ``gen/dedupe_mod/470473a755`` -> ``gen/dedupe_mod``), else the env id.

    >>> from agentsd.trajectory import Trajectory
    >>> [task_template(Trajectory(task_id=i)) for i in ("sokoban-easy-3", "HumanEval/7", "gen/a_b/47ab0c9e")]
    ['sokoban-easy', 'HumanEval', 'gen/a_b']
    """
    if traj.meta.get("template"):
        return str(traj.meta["template"])
    if traj.task_id:
        stripped = _TRAILING_NUM_RE.sub("", str(traj.task_id))
        return stripped or str(traj.task_id)
    return traj.env_id


def action_signature(text: str) -> str:
    """An action's shape, without its specifics: ``call:search`` for each tool call,
    ``code:python`` for a fenced code block, ``answer`` for ``<answer>`` tags, else ``text``.

    >>> action_signature('<tool_call>{"name": "search", "arguments": {"q": 1}}</tool_call>')
    'call:search'
    >>> action_signature("<answer>Up</answer>"), action_signature("hmm")
    ('answer', 'text')
    """
    calls = []
    for m in _TOOL_RE.finditer(text or ""):
        try:
            calls.append("call:" + str(json.loads(m.group(1)).get("name")))
        except (ValueError, AttributeError):
            calls.append("call:?")
    if calls:
        return " ".join(calls)
    code = _CODE_RE.search(text or "")
    if code:
        return f"code:{code.group(1) or 'text'}"
    if _ANSWER_RE.search(text or ""):
        return "answer"
    return "text"


def _is_drawing(line: str) -> bool:
    s = line.strip()
    return bool(s) and s.count("#") >= 2 and sum(ch in "#@$.*+ " for ch in s) >= 0.8 * len(s)


def normalize_feedback(text: str, max_len: int = 160) -> str:
    """Env feedback reduced to its reusable pattern: drawings (board lines) dropped, quoted values
    and numbers abstracted, whitespace collapsed.

    >>> normalize_feedback("2 move(s) had no effect.\\n\\n#####\\n#@$.#\\n#####")
    'N move(s) had no effect.'
    >>> normalize_feedback("'Upp' is not a move; use Up")
    "'…' is not a move; use Up"
    """
    lines = [ln for ln in (text or "").splitlines() if not _is_drawing(ln)]
    out = _QUOTED_RE.sub(lambda m: m.group(1) + "…" + m.group(1), " ".join(lines))
    out = _NUM_RE.sub("N", out)
    out = re.sub(r"\s+", " ", out).strip()
    return out[:max_len]


def _slug(*parts: str, limit: int = 64) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", " ".join(parts).lower()).strip("-")
    s = re.sub(r"-+", "-", s)[:limit].strip("-")
    return s or "skill"


def _keywords(texts: Iterable[str], k: int = 8) -> tuple[str, ...]:
    c: Counter[str] = Counter()
    for t in texts:
        c.update(w.lower() for w in _WORD_RE.findall(t) if w.lower() not in _STOP)
    return tuple(w for w, _ in c.most_common(k))


def _pct(a: int, b: int) -> str:
    return f"{a}/{b}" if b else "0/0"


def _scrub(text: str, values: Iterable[str]) -> str:
    """``text`` with every whole-word occurrence of ``values`` replaced by ``…``."""
    for v in sorted(leaked_values(text, values), key=len, reverse=True):
        text = re.sub(r"(?<![\w])" + re.escape(v) + r"(?![\w])", "…", text, flags=re.I)
    return text


def task_skeleton(tasks: Sequence[str], limit: int = 150) -> str:
    """The words every task text shares, in order, with what differs between them as ``…`` (a
    single task: its quoted values and numbers abstracted). What retrieval and the teacher
    match a template on, in the task's own words.

    >>> task_skeleton(["Task: Delete my 'Gym 4' event today.", "Task: Delete my 'Dentist' event now."])
    "Delete my '…' event …"
    """
    # a quoted phrase names one task's item: abstract it before comparing tasks
    texts = list(dict.fromkeys(_QUOTED_RE.sub(lambda m: m.group(1) + "…" + m.group(1),
                                              re.sub(r"^\s*Task:\s*", "", t).strip())
                               for t in tasks if t.strip()))
    if not texts:
        return ""
    words = texts[0].split()
    if len(texts) == 1:
        words = normalize_feedback(texts[0], 10_000).split()
    for other in texts[1:12]:
        ow = other.split()
        merged: list[str] = []
        sm = difflib.SequenceMatcher(None, words, ow, autojunk=False)
        pos_a = pos_b = 0
        for a, b, n in sm.get_matching_blocks():
            if a > pos_a or b > pos_b:
                merged.append("…")
            merged.extend(words[a:a + n])
            pos_a, pos_b = a + n, b + n
        words = [w for i, w in enumerate(merged) if not (w == "…" and i and merged[i - 1] == "…")]
    out = " ".join(words).strip()
    if len(out) > limit:
        out = out[:limit].rsplit(" ", 1)[0] + " …"
    return out


def _provenance(trajs: Sequence[Trajectory], command: str, now: str, notes: str = "") -> Provenance:
    ids = list(dict.fromkeys(t.id for t in trajs))
    return Provenance(method="deterministic", summarizer=DETERMINISTIC_VERSION,
                      source_trajectories=tuple(ids[:MAX_SOURCE_IDS]), n_sources=len(ids),
                      created=now, updated=now, command=command, notes=notes[:500])


def _privileged_list(traj: Trajectory) -> list[Any]:
    """Privileged views per turn: the ones the rollout recorded (``Turn.privileged``) when every
    turn has them, else by replay (empty when the env cannot replay this episode)."""
    from agentsd.hints import _views_privileged, replay_privileged

    if traj.turns and all(t.privileged for t in traj.turns):
        return [_views_privileged(t.privileged) for t in traj.turns]
    try:
        return replay_privileged(traj)
    except Exception as e:  # a trajectory from an env no longer registered, or without a seed
        log.info("no privileged views for %s: %s", traj.id, e)
        return []


def _fit(variants: Iterable[str]) -> str:
    """The first of ``variants`` (most detailed first) within the body bound, else the last."""
    last = ""
    for v in variants:
        last = v
        if body_tokens(v) <= MAX_BODY_TOKENS:
            return v
    return last


# ---------------------------------------------------------------------------------------------
# workflows

def _step_text(name: str, args: Sequence[tuple[str, str]], detail: int) -> str:
    """One call of a rule. ``detail`` 2: every argument with its placeholder; 1: the arguments
    copied from the task folded into one clause; 0: argument names only."""
    if not args:
        return f"{name}()"
    if detail <= 0:
        return f"{name}({', '.join(a for a, _ in args)})"
    if detail == 1:
        args = [(a, _compact(lab)) for a, lab in args]
    from_task = [a for a, lab in args if lab == f"<{a} from the task>"]
    if detail == 1 and len(from_task) >= 2:
        rest = [f"{a}={lab}" for a, lab in args if a not in from_task]
        inner = ", ".join(rest + [f"{', '.join(from_task)} from the task"])
        return f"{name}({inner})"
    return f"{name}({', '.join(f'{a}={lab}' for a, lab in args)})"


_COMPACT = ((re.compile(r"^<the (\w+) given in the task>$"), r"<\1 from the task>"),
            (re.compile(r"^<the quoted text from the task>$"), "<quoted in the task>"),
            (re.compile(r"^<the (\w+) inside (\w+) of the (\w+) result>$"), r"<\1 in \2 of \3>"),
            (re.compile(r" from the (\w+) result>$"), r" from \1>"),
            (re.compile(r" in the (\w+) result>$"), r" in \1>"))


def _compact(label: str) -> str:
    """A placeholder in fewer words (``<id from the x result>`` -> ``<id from x>``)."""
    for pat, rep in _COMPACT:
        label = pat.sub(rep, label)
    return label


def _sequence_text(steps: Sequence[tuple[str, Sequence[tuple[str, str]]]], detail: int,
                   detailed_last: int | None = None) -> str:
    """The calls as one sentence naming the first call first. With ``detailed_last``, only the
    last that many calls keep their placeholders (the template's own steps); earlier calls
    show their argument names."""
    runs: list[tuple[str, Sequence[tuple[str, str]], int]] = []
    for n, a in steps:  # a call repeated back to back is one step done for each item
        if runs and runs[-1][0] == n:
            runs[-1] = (n, runs[-1][1], runs[-1][2] + 1)
        else:
            runs.append((n, a, 1))
    k = len(runs) if detailed_last is None else detailed_last
    texts = [(n if detail < 0 else _step_text(n, a, detail if i >= len(runs) - k else 0))
             + (" for each item" if times > 1 else "")
             for i, (n, a, times) in enumerate(runs)]
    if len(texts) == 1:
        return f"Call {texts[0]}."
    return f"First call {texts[0]}, then " + ", then ".join(texts[1:]) + "."


def _labels(seqs: Sequence[list[SourcedCall]], n_tasks: int = 1) -> list[tuple[str, list[tuple[str, str]]]]:
    """Per step, each argument's most common placeholder over the episodes (a value no source
    explains but the episodes of every one of ``n_tasks`` >= 2 different tasks pass is part of
    the template and written as is)."""
    steps = []
    for i, first in enumerate(seqs[0]):
        args = []
        for a, _, _ in first.args:
            found = [next(((v, s) for k, v, s in seq[i].args if k == a), (None, None)) for seq in seqs]
            kinds = Counter(s.label(a) for _, s in found if s is not None)
            label = kinds.most_common(1)[0][0] if kinds else f"<{a}>"
            vals = {json.dumps(v, sort_keys=True) for v, s in found if s is not None}
            if n_tasks >= 2 and len(vals) == 1 and all(s is not None and s.kind == "unknown" for _, s in found):
                label = next(iter(vals))  # the same everywhere and from nowhere: a constant
            args.append((a, label))
        steps.append((first.name, args))
    return steps


#: how a tool workflow names its arguments: ``sources`` (each argument with a placeholder saying
#: where its value comes from) or ``names`` (the calls by name only, in order). A 135M model
#: copied ``sources`` placeholders verbatim into its calls (``"query": "<the quoted text from the
#: task>"``); a rule that names the tools is the kind a probe found it follows
WORKFLOW_DETAILS = ("sources", "names")


def _tool_workflow_body(wins: Sequence[Trajectory], detail: str = "sources") -> tuple[str, list[str]] | None:
    seqs = {t.id: [c for c in episode_calls(t) if c.ok] for t in wins}
    shapes = Counter(tuple(c.name for c in s) for s in seqs.values() if s)
    if not shapes:
        return None
    shape = max(shapes, key=lambda k: (shapes[k], -len(k), k))
    chosen = [t for t in wins if tuple(c.name for c in seqs[t.id]) == shape]
    steps = _labels([seqs[t.id] for t in chosen], len({task_key(t) for t in chosen}))
    variants = [_sequence_text(steps, 2), *(_sequence_text(steps, 1, k) for k in range(len(steps), 0, -1)),
                _sequence_text(steps, 0), _sequence_text(steps, -1)]
    if detail == "names":
        variants = variants[-1:]
    names = _sequence_text(steps, -1)[len("First call "):-1].split(", then ")
    variants += [f"First call {', then '.join(names[:k])}, then …, then {names[-1]}."
                 for k in range(len(names) - 2, 0, -1)]  # the first calls matter most
    return _fit(variants), list(shape)


def _plan_workflow_body(plans: Sequence[Sequence[Any]]) -> tuple[str, list[str]] | None:
    """A workflow from gold plans alone (no success to read argument sources from)."""
    shapes: Counter = Counter()
    for plan in plans:
        calls = [parse_calls(f"<tool_call>{p}</tool_call>") for p in plan]
        if calls and all(len(c) == 1 for c in calls):
            shapes[tuple((c[0][0], tuple(c[0][1])) for c in calls)] += 1
    if not shapes:
        return None
    shape = shapes.most_common(1)[0][0]
    steps = [(n, [(a, f"<{a}>") for a in args]) for n, args in shape]
    return _fit(_sequence_text(steps, d) for d in (0,)), [n for n, _ in shape]


def _answer_words(wins: Sequence[Trajectory]) -> list[list[str]]:
    return [m.group(1).split() for t in wins for tu in t.turns
            for m in [_ANSWER_RE.search(tu.action_text or "")] if m]


def _text_workflow_body(wins: Sequence[Trajectory]) -> tuple[str, list[str]]:
    shape = Counter(action_signature(tu.action_text) for t in wins for tu in t.turns).most_common(1)[0][0]
    where = _SHAPE_WORDS.get(shape, shape.replace("code:", "a code block of "))
    turns = statistics.median(len(t.turns) for t in wins)
    per = [len(w) for w in _answer_words(wins)]
    vocab = sorted({w for a in _answer_words(wins) for w in a})
    unit = f"every step, in order, as words ({', '.join(vocab)})" if 1 <= len(vocab) <= 8 else "all of it, in order"
    if turns <= 1:
        body = f"Send the whole solution in your first reply: {unit}, inside {where}."
    elif per and max(per) == 1:
        body = (f"Send one step per reply inside {where}, read the env's reply, then send the next; "
                "keep going until the task is solved.")
    else:
        body = (f"Reply inside {where} each turn with the next steps of the solution, read the env's "
                "reply, then go on from the state it shows.")
    return body, [shape]


def _workflow_skill(env_id: str, template: str, trajs: Sequence[Trajectory], plans: dict[str, Any],
                    values: set[str], command: str, now: str, multi: bool,
                    detail: str = "sources") -> Skill | None:
    wins = [t for t in trajs if t.success]
    tools = any(parse_calls(tu.action_text) for t in trajs for tu in t.turns)
    made = None
    if wins:
        made = _tool_workflow_body(wins, detail) if tools else _text_workflow_body(wins)
    if made is None:
        made = _plan_workflow_body([p for p in (plans.get(t.id) for t in trajs) if p])
    if made is None:
        return None
    body, shape = made
    body = _scrub(body, values)
    skeleton = _scrub(task_skeleton([task_text(t) for t in trajs]), values)
    if tools and skeleton:
        desc = f"Use when the task reads like: {skeleton}"
    elif multi and skeleton:
        desc = f"Use for tasks like: {skeleton}"
    else:
        desc = "Use on every task of this env: how to send the solution, and in how many replies."
    turns = [len(t.turns) for t in wins]
    notes = (f"template={template}; solved {_pct(len(wins), len(trajs))}"
             + (f"; median turns of solved {statistics.median(turns):g}" if turns else "")
             + ("; from the gold plan (no solved episode)" if not wins else ""))
    return Skill(name=_slug(template, "workflow"), description=desc, env=env_id, kind="workflow",
                 body=body, keywords=_keywords([skeleton, *shape]),
                 provenance=_provenance(trajs, command, now, notes=notes),
                 stats=SkillStats(support=len(trajs)))


# ---------------------------------------------------------------------------------------------

def summarize_deterministic(trajectories: Sequence[Trajectory], env_id: str | None = None,
                            command: str = "", max_pitfalls: int = 4, min_episodes: int = 2,
                            use_privileged: bool = True, now: str | None = None,
                            notes: str = "", workflow_detail: str = "sources") -> list[Skill]:
    """Workflow, pitfall and convention skills from ``trajectories`` of one env (see the module
    docstring). Deterministic: the same trajectories give the same skills (``now`` aside).
    ``workflow_detail`` (:data:`WORKFLOW_DETAILS`) picks how tool workflows name arguments."""
    if workflow_detail not in WORKFLOW_DETAILS:
        raise ValueError(f"workflow_detail must be one of {WORKFLOW_DETAILS}, got {workflow_detail!r}")
    trajs = [t for t in trajectories if env_id is None or t.env_id == env_id]
    if not trajs:
        raise ValueError(f"no trajectories{' of ' + env_id if env_id else ''} to summarize")
    envs = {t.env_id for t in trajs}
    if len(envs) > 1:
        raise ValueError(f"trajectories mix envs {sorted(envs)}; summarize one env at a time")
    env_id = envs.pop()
    now = now or now_iso()
    trajs = sorted(trajs, key=lambda t: t.id)
    groups: dict[str, list[Trajectory]] = defaultdict(list)
    for t in trajs:
        groups[task_template(t)].append(t)
    plans: dict[str, Any] = {}
    if use_privileged:
        for t in trajs:
            if not any(x.success for x in groups[task_template(t)]):
                views = _privileged_list(t)
                if views and views[0].plan:
                    plans[t.id] = list(views[0].plan)
    values = instance_values(trajs)
    multi = len(groups) > 1
    skills: list[Skill] = []
    for template in sorted(groups):
        s = _workflow_skill(env_id, template, groups[template], plans, values, command, now, multi,
                            workflow_detail)
        if s is not None:
            skills.append(s)
    from agentsd.skills.pitfalls import flag_skills, pitfall_skills

    skills += pitfall_skills(env_id, trajs, values, command, now, max_pitfalls, min_episodes)
    skills += flag_skills(env_id, trajs, command, now, min_episodes=min_episodes)
    tools = any(parse_calls(tu.action_text) for t in trajs for tu in t.turns)
    from agentsd.skills.conventions import text_conventions, tool_conventions

    skills += (tool_conventions if tools else text_conventions)(env_id, trajs, command, now)
    if notes:
        skills = [dataclasses.replace(s, provenance=dataclasses.replace(
            s.provenance, notes=(notes + " " + s.provenance.notes).strip()[:500])) for s in skills]
    seen: set[str] = set()
    unique = []
    for s in skills:  # names come from data; two patterns may slug alike
        name, i = s.name, 2
        while name in seen:
            name, i = _slug(s.name[:60], str(i)), i + 1
        seen.add(name)
        unique.append(dataclasses.replace(s, name=name) if name != s.name else s)
    return unique
