"""Pitfall skills of the deterministic summarizer: the env feedback seen most often in failed
episodes (abstracted), with the call that caused it and the one that worked next, and boolean
``info`` flags that turn on far more often in failures than in successes.
:func:`agentsd.skills.deterministic.summarize_deterministic` calls them."""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from agentsd.skills.deterministic import (
    _NUM_RE,
    _SHAPE_WORDS,
    _STOP,
    _WORD_RE,
    _fit,
    _is_drawing,
    _keywords,
    _labels,
    _pct,
    _provenance,
    _scrub,
    _slug,
    _step_text,
    action_signature,
    normalize_feedback,
)
from agentsd.skills.guidance import _reply, _results, clean_error, episode_calls, parse_calls
from agentsd.skills.library import Skill, SkillStats
from agentsd.trajectory import Trajectory

__all__ = ["pitfall_skills", "flag_skills"]


@dataclass
class _Pattern:
    episodes: set[str] = field(default_factory=set)
    failed_episodes: set[str] = field(default_factory=set)
    tools: Counter = field(default_factory=Counter)
    message: str = ""


_ERROR_WORDS = ("error", "invalid", "not ", "no effect", "failed", "unknown", "missing", "wrong",
                "cannot", "can't", "denied", "exception", "traceback", "timeout", "refused")
_TYPE_ERROR_RE = re.compile(r"argument '(\w+)'.*?must be (an? \w+|\w+)")
_INSTRUCTS_RE = re.compile(r"\b(call|reply|use|pass|write|give|try)\b", re.I)


def _looks_like_error(pattern: str) -> bool:
    low = pattern.lower()
    return any(w in low for w in _ERROR_WORDS)


def _errors_of(traj: Trajectory, i: int) -> list[tuple[str, str]]:
    """``(tool or action shape, message)`` of each error the env answered action ``i`` with."""
    tu = traj.turns[i]
    msgs = _reply(traj, i)
    calls = parse_calls(tu.action_text)
    out = []
    for j, payload in enumerate(_results(msgs)):
        if isinstance(payload, dict) and "error" in payload:
            err = payload["error"]
            msg = err.get("message") if isinstance(err, dict) else err
            out.append((calls[j][0] if j < len(calls) else "", str(msg or err)))
    if out:
        return out
    text = "\n".join(str(m.get("content") or "") for m in msgs)
    first = "\n".join(ln for ln in text.split("\n\n")[0].splitlines() if not _is_drawing(ln)).strip()
    bad = tu.parse not in ("", "ok") or any(v < 0 for k, v in tu.reward_terms.items() if k != "step")
    if first and (bad or _looks_like_error(normalize_feedback(first))):
        return [(calls[0][0] if calls else action_signature(tu.action_text), first)]
    return []


def _feedback_patterns(trajs: Sequence[Trajectory]) -> dict[str, _Pattern]:
    pats: dict[str, _Pattern] = defaultdict(_Pattern)
    for t in trajs:
        for i in range(len(t.turns)):
            for tool, msg in _errors_of(t, i):
                key = normalize_feedback(msg)
                p = pats[key]
                p.message = p.message or msg
                p.episodes.add(t.id)
                p.tools[tool] += 1
                if not t.success:
                    p.failed_episodes.add(t.id)
    return pats


def _good_call(tool: str, trajs: Sequence[Trajectory]) -> str | None:
    """``tool`` as successful episodes called it (arguments with their sources), or None."""
    found = []
    for t in trajs:
        if t.success:
            found += [c for c in episode_calls(t) if c.ok and c.name == tool]
    if not found:
        return None
    shape = Counter(c.shape() for c in found).most_common(1)[0][0]
    same = [[c] for c in found if c.shape() == shape]
    return _step_text(*_labels(same)[0], detail=2)


def _pitfall_body(tool: str, raw: str, good: str | None, is_call: bool, values: set[str],
                  limit: int) -> str:
    """The rule for one error: the fix when a successful call of the same tool shows it, the
    message's own instruction when it gives one, else not to repeat the action."""
    msg = _scrub(clean_error(raw, limit), values)
    if good:
        needs = sorted({m.group(1) for m in re.finditer(r"from the (\w+) result", good)} - {tool})
        first = f"call {', then '.join(needs)} first, then " if needs else "call it again as "
        return f'If {tool} returns "{msg}", {first}{good}.'
    typed = _TYPE_ERROR_RE.search(raw)
    if typed and is_call:
        arg, kind = typed.group(1), typed.group(2)
        where = " copied from an earlier result" if arg.endswith("_id") else ""
        return f'If {tool} returns "{msg}", call it again with {arg} as {kind}{where}.'
    if _INSTRUCTS_RE.search(msg):
        return f'If the env replies "{msg}", do what it says in your next reply.'
    what = f"that {tool} call" if is_call else "that reply"
    return (f'If the env replies "{msg}", {what} was wasted: do not send it again from the same '
            "state; send a different one.")


def pitfall_skills(env_id: str, trajs: Sequence[Trajectory], values: set[str], command: str,
                    now: str, max_pitfalls: int, min_episodes: int) -> list[Skill]:
    pats = _feedback_patterns(trajs)
    ranked = sorted(pats.items(), key=lambda kv: (-len(kv[1].failed_episodes), -len(kv[1].episodes), kv[0]))
    out: list[Skill] = []
    for key, p in ranked:
        if len(out) >= max_pitfalls or len(p.episodes) < min_episodes:
            continue
        tool = p.tools.most_common(1)[0][0]
        is_call = bool(tool) and tool not in _SHAPE_WORDS and not tool.startswith(("code:", "call:"))
        raw = p.message if is_call else _NUM_RE.sub("N", p.message)  # a move count is not a rule
        good = _good_call(tool, trajs) if is_call else None

        body = _fit(_pitfall_body(tool, raw, good, is_call, values, n) for n in (140, 80, 40))
        words = [w for w in _WORD_RE.findall(key) if w.lower() not in _STOP][:5]
        src = [t for t in trajs if t.id in p.episodes]
        notes = (f"seen in {len(p.episodes)} episodes, {len(p.failed_episodes)} of them failed; "
                 f"answered {tool or 'an action'}")
        out.append(Skill(
            name=_slug("avoid", *words) if words else _slug("avoid-feedback", str(len(out))),
            description=f'Use when a reply says "{_scrub(clean_error(key, 90), values)}" or before '
                        f"calling {tool}." if is_call else
                        f'Use when the env replies "{_scrub(clean_error(key, 90), values)}".',
            env=env_id, kind="pitfall", body=body, keywords=_keywords([key, tool]),
            provenance=_provenance(src, command, now, notes=notes), stats=SkillStats(support=len(p.episodes))))
    return out


def flag_skills(env_id: str, trajs: Sequence[Trajectory], command: str, now: str,
                 min_gap: float = 0.1, min_episodes: int = 2) -> list[Skill]:
    """Boolean ``info`` flags that turn on far more often in failed than in solved episodes."""
    flags: set[str] = {k for t in trajs for tu in t.turns for k, v in tu.info.items() if isinstance(v, bool)}
    fails = [t for t in trajs if not t.success]
    wins = [t for t in trajs if t.success]
    out = []
    for flag in sorted(flags):
        def on(t: Trajectory, flag: str = flag) -> bool:
            return any(tu.info.get(flag) is True for tu in t.turns)

        f_on = [t for t in fails if on(t)]
        w_on = [t for t in wins if on(t)]
        rf = len(f_on) / len(fails) if fails else 0.0
        rw = len(w_on) / len(wins) if wins else 0.0
        if len(f_on) < min_episodes or rf - rw < min_gap:
            continue
        after = "the task can no longer be solved" if not w_on else "the task is usually lost"
        body = (f"Never send an action after which `{flag}` holds: from then on {after}. Before each "
                f"action, check that it cannot cause `{flag}`.")
        notes = (f"{flag} in {_pct(len(f_on), len(fails))} failed and {_pct(len(w_on), len(wins))} "
                 "solved episodes")
        out.append(Skill(
            name=_slug("avoid", flag), description=f"Use before every action: avoid reaching a state "
            f"where `{flag}` holds.", env=env_id, kind="pitfall", body=body, keywords=(flag,),
            provenance=_provenance(f_on + w_on, command, now, notes=notes),
            stats=SkillStats(support=len(f_on))))
    return out
