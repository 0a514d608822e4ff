"""The machinery every ToolWorld template module shares: :class:`Template` and its registry
:data:`TEMPLATES`, the recording gold :class:`Client`, and the planting helpers templates use
(fresh contacts, dates, money, mail, meetings)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from agentsd.envs.toolworld import apps as _apps  # noqa: F401 - importing apps declares the APIs
from agentsd.envs.toolworld.api import call_api
from agentsd.envs.toolworld.grader import Added, Changed, Expectation
from agentsd.envs.toolworld.world import FIRST, LAST, World, add_email, add_event

__all__ = ["Template", "TEMPLATES", "Client", "GoldCall", "GoldError", "templates_for", "template",
           "fresh_person"]


@dataclass(frozen=True)
class GoldCall:
    """One call of a gold solution."""

    name: str
    arguments: dict[str, Any]

    def text(self) -> str:
        import json

        return json.dumps({"name": self.name, "arguments": self.arguments}, ensure_ascii=False)


class GoldError(RuntimeError):
    """A gold solver's call failed: the template is wrong, not the agent."""


class Client:
    """Runs a gold solver's calls against a world through :func:`call_api`, recording them."""

    def __init__(self, world: World) -> None:
        self.w = world
        self.calls: list[GoldCall] = []
        self._cache: dict[str, Any] = {}

    def __call__(self, name: str, **args: Any) -> Any:
        r = call_api(self.w, name, args)
        self.calls.append(GoldCall(name, args))
        if not r.ok:
            raise GoldError(f"gold call {name}({args}) failed: {r.error_kind}: {r.error}")
        return r.value

    def me(self) -> str:
        if "me" not in self._cache:
            self._cache["me"] = self("supervisor__show_profile")["email"]
        return self._cache["me"]

    def token(self, app: str) -> str:
        if app not in self._cache:
            if "pw" not in self._cache:
                self._cache["pw"] = {d["app"]: d["password"] for d in self("supervisor__show_account_passwords")}
            self._cache[app] = self(f"{app}__login", username=self.me(), password=self._cache["pw"][app])[
                "access_token"]
        return self._cache[app]

    def pages(self, name: str, **args: Any) -> list[Any]:
        """Every result of a paginated API, page by page."""
        out, page = [], 1
        while True:
            r = self(name, **args, **({"page": page} if page > 1 else {}))
            out += r["results"]
            if page >= r["total_pages"]:
                return out
            page += 1

    def today(self) -> dt.date:
        if "today" not in self._cache:
            self._cache["today"] = dt.date.fromisoformat(self("supervisor__show_current_datetime")["date"])
        return self._cache["today"]

    def contact(self, full_name: str) -> dict[str, Any]:
        """The contact with exactly this full name (a search can return namesakes)."""
        for c in self.pages("contacts__search_contacts", query=full_name):
            if f"{c['first_name']} {c['last_name']}" == full_name:
                return c
        raise GoldError(f"no contact named {full_name}")


@dataclass(frozen=True)
class Template:
    """One task template (see the module docstring)."""

    name: str
    level: int
    split: str
    apps: tuple[str, ...]
    setup: Callable[[World, np.random.Generator, str], dict[str, Any]]
    instruction: Callable[[dict[str, Any]], str]
    solve: Callable[[Client, dict[str, Any]], Any]
    expect: Callable[[World, dict[str, Any]], Expectation]
    notes: str


TEMPLATES: dict[str, Template] = {}


def template(level: int, split: str, apps: tuple[str, ...], notes: str,
             into: dict[str, Template] | None = None) -> Callable[[type], type]:
    """Register a template from a class holding ``setup``, ``instruction``, ``solve``, ``expect``
    (into :data:`TEMPLATES`, or into ``into``: ToolWorld-Lite keeps its own templates apart)."""

    def wrap(cls: type) -> type:
        name = re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()
        table = TEMPLATES if into is None else into
        table[name] = Template(name, level, split, apps, cls.setup, cls.instruction, cls.solve, cls.expect, notes)
        return cls

    return wrap


def templates_for(split: str, levels: tuple[int, ...]) -> list[Template]:
    """Templates of a split (``"train"``, ``"test"`` or ``"all"``) at the given levels."""
    return [t for t in TEMPLATES.values() if (split == "all" or t.split == split) and t.level in levels]


# ---------------------------------------------------------------------------------------------
# planting helpers (setup side: direct world access)

def _pick(rng: np.random.Generator, seq: Any) -> Any:
    return seq[int(rng.integers(len(seq)))]


def _full(c: dict) -> str:
    return f"{c['first_name']} {c['last_name']}"


def _taken(w: World) -> set[str]:
    return {c["email"] for c in w.tables["contacts"].values()} | {w.user["email"]}


def fresh_person(w: World, rng: np.random.Generator, difficulty: str,
                 relationship: str | None = None) -> dict:
    """Plant a contact whose full name is unique, plus (medium: half the time, hard: always) a
    namesake with the same first name, so the agent has to match the full name."""
    from agentsd.envs.toolworld.world import add_person

    names = {_full(c) for c in w.tables["contacts"].values()}
    while True:
        first, last = _pick(rng, FIRST), _pick(rng, LAST)
        if f"{first} {last}" not in names and f"{first} {last}" != f"{w.user['first_name']} {w.user['last_name']}":
            break
    person = add_person(w, rng, _taken(w), first, last, relationship)
    if difficulty == "hard" or (difficulty == "medium" and rng.random() < 0.5):
        other = next(x for x in LAST if f"{first} {x}" not in names and x != last)
        add_person(w, rng, _taken(w), first, other)
    return person


def _day(w: World, days: int) -> str:
    return (w.today() + dt.timedelta(days=days)).isoformat()


def _cents(rng: np.random.Generator, lo: int, hi: int) -> int:
    return int(rng.integers(lo, hi)) * 100 + int(rng.integers(0, 4)) * 25


def _money(cents: int) -> str:
    return f"{cents / 100:.2f}"


def _acct(w: World) -> int:
    return w.tables["accounts"]["bank"]["balance"]


def _pay_expect(w: World, payments: list[tuple[str, int]], answer: Any = None, **kw: Any) -> Expectation:
    """Outgoing payments: one new transaction each and the balance lowered by their sum."""
    me = w.user["email"]
    added = [Added("transactions", {"sender": me, "receiver": r, "amount": c},
                   f"paid {_money(c)} to {r}") for r, c in payments]
    bal = Changed("accounts", "bank", {"balance": _acct(w) - sum(c for _, c in payments)}, "balance lowered")
    return Expectation(answer=answer, added=added, changed=[bal], **kw)


def _contact_email(w: World, name: str) -> str:
    return next(c["email"] for c in w.tables["contacts"].values() if _full(c) == name)


def _plant_mail(w: World, rng: np.random.Generator, sender: str, subjects: list[str], days_ago: list[int],
                read: bool = True, body: str = "See details below.") -> list[dict]:
    return [add_email(w, sender, [w.user["email"]], s, body, f"{_day(w, -k)}T{int(rng.integers(8, 20)):02d}:00", read)
            for s, k in zip(subjects, days_ago)]


def _downloads(w: World, ext: str) -> list[dict]:
    return [f for p, f in sorted(w.tables["files"].items()) if p.startswith("/downloads/")
            and p.count("/") == 2 and p.endswith(ext)]


def _last_friday(today: dt.date) -> dt.date:
    return today - dt.timedelta(days=(today.weekday() - 4) % 7 or 7)


def _plant_meeting(w: World, rng: np.random.Generator, d: str, title: str) -> tuple[dict, list[dict]]:
    people = [fresh_person(w, rng, d) for _ in range(int(rng.integers(2, 4)))]
    k = int(rng.integers(2, 20))
    e = add_event(w, title, f"{_day(w, k)}T17:00", f"{_day(w, k)}T19:00", "Community hall",
                  [x["email"] for x in people])
    return e, people
