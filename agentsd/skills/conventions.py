"""Convention skills of the deterministic summarizer: rules every task of an env shares (how to
finish, a login-like call whose result other calls take, ids passed as numbers, the answer
format), read off the solved episodes. :func:`agentsd.skills.deterministic.summarize_deterministic`
calls them; they live apart so each file stays a size a reader can hold."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

from agentsd.skills.deterministic import (
    _answer_words,
    _compact,
    _fit,
    _keywords,
    _provenance,
    _slug,
)
from agentsd.skills.guidance import episode_calls
from agentsd.skills.library import Skill, SkillStats
from agentsd.trajectory import Trajectory

__all__ = ["tool_conventions", "text_conventions"]


def _convention(env_id: str, name: str, desc: str, body: str, trajs: Sequence[Trajectory],
                command: str, now: str, notes: str) -> Skill:
    return Skill(name=name, description=desc, env=env_id, kind="convention", body=_fit([body]),
                 keywords=_keywords([desc, body]), provenance=_provenance(trajs, command, now, notes=notes),
                 stats=SkillStats(support=len(trajs)))


def tool_conventions(env_id: str, trajs: Sequence[Trajectory], command: str, now: str) -> list[Skill]:
    wins = [t for t in trajs if t.success]
    calls = {t.id: [c for c in episode_calls(t) if c.ok] for t in wins}
    out = []
    lasts = Counter(c[-1].name for c in calls.values() if c)
    if lasts and len(lasts) == 1:
        last = next(iter(lasts))
        finals = [c[-1] for c in calls.values() if c]
        with_answer = [c for c in finals if c.args]
        if with_answer and len(with_answer) < len(finals):
            arg = with_answer[0].args[0][0]
            body = (f"End every task with {last}: pass {arg}=<just the answer> when the task asks a "
                    f"question, and call {last}() with no {arg} when it only asks for changes.")
        elif with_answer:
            body = f"End every task with {last}({with_answer[0].args[0][0]}=<just the answer>)."
        else:
            body = f"End every task with {last}()."
        out.append(_convention(env_id, _slug("finish-with", last), "Use when the task is done, to "
                               "finish it.", body, wins, command, now,
                               notes=f"{len(finals)} solved episodes ended with {last}"))
    # an argument every app takes from its own login-like call: log in first
    pairs: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for cs in calls.values():
        for c in cs:
            app = c.name.split("__", 1)[0]
            for a, _, s in c.args:
                if s.kind == "result" and s.tool.startswith(app + "__") and s.tool != c.name:
                    pairs[a][s.tool.split("__", 1)[1]].add(app)
    for arg, by_suffix in sorted(pairs.items()):
        suffix, apps = max(by_suffix.items(), key=lambda kv: (len(kv[1]), kv[0]))
        example = next((c for cs in calls.values() for c in cs if c.name.endswith("__" + suffix)), None)
        if example is None or len(apps) < 2:  # one app's call order is its template's workflow
            continue
        n = len(apps)
        app = example.name.split("__", 1)[0]
        args = ", ".join(f"{a}={_compact(s.label(a)).replace(f'the {app} ', 'the APP ')}"
                         for a, _, s in example.args)
        body = (f"Before an APP call that takes {arg}, call APP__{suffix}({args}), then pass "
                f"{arg}=<{arg} from APP__{suffix}> to the APP calls (APP is the app's name).")
        out.append(_convention(env_id, _slug(suffix, "before", arg), f"Use when a call needs {arg}: "
                               f"get it from APP__{suffix} first.", body, wins, command, now,
                               notes=f"{n} apps ({', '.join(sorted(apps))}) took {arg} from APP__{suffix}"))
    ids = sorted({a for cs in calls.values() for c in cs for a, v, s in c.args
                  if a.endswith("_id") and isinstance(v, int) and not isinstance(v, bool) and s.kind == "result"})
    if ids:
        body = (f"Pass ids ({', '.join(ids[:4])}) as numbers copied from an earlier search or list "
                "result, never as words or names.")
        out.append(_convention(env_id, "ids-are-numbers-from-results", "Use when a call takes an id.",
                               body, wins, command, now, notes=f"id arguments seen: {', '.join(ids)}"))
    return out


def text_conventions(env_id: str, trajs: Sequence[Trajectory], command: str, now: str) -> list[Skill]:
    wins = [t for t in trajs if t.success]
    answers = _answer_words(wins)
    vocab = Counter(w for a in answers for w in a)
    if not answers or not 1 <= len(vocab) <= 8:
        return []
    words = sorted(vocab, key=lambda w: (-vocab[w], w))
    per = max(len(a) for a in answers)
    body = (f"Write each step as one of the words {', '.join(words)}, exactly so spelled, separated by "
            "spaces, inside answer tags" + (", one word per reply." if per == 1 else "; nothing else."))
    return [_convention(env_id, "answer-format", "Use on every reply: how to write the answer.", body,
                        wins, command, now, notes=f"vocabulary of {len(answers)} solved answers")]
