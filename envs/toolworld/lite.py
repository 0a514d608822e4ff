"""ToolWorld-Lite: short ToolWorld tasks a small model can train on a CPU, where shared rules decide success.

Same world, apps, grader and collateral-damage checks as :class:`ToolWorldEnv`; what changes is
the task pool and the prompt. Every task takes 1-4 gold app calls, and the prompt lists only the
tools of the apps the task needs (plus ``api_docs`` and ``complete_task``), in under 400 SmolLM2
tokens. Nothing in the prompt says *how* to use them: the login chain, ids taken from search
results, counts from ``total_results`` and answer formats are rules a skill can teach.

Templates come in three disjoint groups (:data:`GROUPS`):

- ``warm``: format demonstrations only (one-call lookups whose answer is copied out of the tool
  result, one-call changes, and two-call chains whose second call uses a value read out of the
  first result: an attendee's email, a phone number, a contact id); never trained on or
  evaluated;
- ``train``: trained on (split ``train``) and evaluated on new instances (split ``test``);
- ``heldout``: new kinds of task under the same rules (split ``test_templates``).

What the agent sees (``agentsd.make("ToolWorld-Lite-v0").reset(seed=11)``: ``bank_balance``,
375 prompt tokens with the SmolLM2 chat template)::

    [system] You act for the user on their apps. Call a tool by writing exactly:
             <tool_call>{"name": "TOOL", "arguments": {...}}</tool_call>
             Each result comes back in <tool_response>. When done, call complete_task, with
             answer="..." (just the value) if the task asks a question, with no arguments if it
             asks for changes. Change nothing else.
             Tools:
             supervisor__show_profile()
             supervisor__show_account_passwords()
             supervisor__show_current_datetime()
             bank__login(username: str, password: str)
             bank__logout(access_token: str)
             bank__show_balance(access_token: str)
             ... (the other 7 bank APIs)
             api_docs(app='', api='')
             complete_task(answer='')
    [user]   Task: What is my current bank balance in dollars?

Calling ``bank__show_balance`` straight away returns ``invalid or expired access_token for bank;
call bank__login first`` (reward 0, the episode goes on). The gold run is the login chain:
``supervisor__show_account_passwords()``, ``supervisor__show_profile()`` (the username is the
email), ``bank__login(username="yusuf.abbott@mail.example", password="log-6596")``,
``bank__show_balance(access_token=<the token login returned>)``, then
``<tool_call>{"name": "complete_task", "arguments": {"answer": "2131.22"}}</tool_call>``: reward 1.0.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any

import numpy as np

from agentsd.envs.toolworld.api import APIS, Api, Param
from agentsd.envs.toolworld.env import ToolWorldEnv, replay_failures
from agentsd.envs.toolworld.grader import Added, Contains, Expectation, Removed
from agentsd.envs.toolworld.tasks import TEMPLATES, Template, template
from agentsd.envs.toolworld.tasks_base import _full, fresh_person
from agentsd.envs.toolworld.world import NOTE_WORDS, World, add_event, add_note

__all__ = ["ToolWorldLiteEnv", "LITE_TEMPLATES", "CATALOG", "GROUPS", "LOGIN_APPS", "shown_apps",
           "lite_system_prompt", "validate_lite"]

#: apps whose APIs need an access token from ``APP__login`` (the password is in the supervisor app)
LOGIN_APPS = ("email", "bank", "shop")

#: templates only ToolWorld-Lite draws (kept out of ToolWorld's own pools)
LITE_TEMPLATES: dict[str, Template] = {}


def _pick(rng: np.random.Generator, seq: Any) -> Any:
    return seq[int(rng.integers(len(seq)))]


def _day(w: World, days: int) -> str:
    return (w.today() + dt.timedelta(days=days)).isoformat()


@template(1, "lite", ("supervisor",), "The weekday is in the current date and time.", into=LITE_TEMPLATES)
class CurrentWeekday:
    def setup(w, rng, d):
        return {}

    def instruction(p):
        return "What day of the week is it today? Answer with the weekday name."

    def solve(c, p):
        return c("supervisor__show_current_datetime")["weekday"]

    def expect(w, p):
        return Expectation(answer=w.today().strftime("%A"))


@template(1, "lite", ("calendar",), "Answer with the location exactly as the event shows it.", into=LITE_TEMPLATES)
class EventLocation:
    def setup(w, rng, d):
        title = f"{_pick(rng, ['Choir practice', 'Pottery class', 'Chess club', 'Tennis match'])} " \
                f"#{int(rng.integers(10, 99))}"
        place = _pick(rng, ["Riverside Hall", "Studio 7", "North Park Court", "Room 12B", "Elm Street 40"])
        day = _day(w, int(rng.integers(1, 30)))
        add_event(w, title, f"{day}T17:00", f"{day}T18:30", place, [])
        return {"title": title, "place": place}

    def instruction(p):
        return f"Where does my '{p['title']}' event take place? Answer with the location."

    def solve(c, p):
        return c("calendar__search_events", query=p["title"])["results"][0]["location"]

    def expect(w, p):
        return Expectation(answer=next(e["location"] for e in w.tables["events"].values()
                                       if e["title"] == p["title"]))


@template(1, "lite", ("calendar",), "Start and end are YYYY-MM-DDTHH:MM.", into=LITE_TEMPLATES)
class CreateEvent:
    def setup(w, rng, d):
        h = int(rng.integers(9, 18))
        return {"title": f"Lunch with {_pick(rng, ['Ana', 'Marek', 'Sofia', 'Kenji'])} {int(rng.integers(10, 99))}",
                "date": _day(w, int(rng.integers(1, 20))), "start": f"{h:02d}:00", "end": f"{h + 1:02d}:00"}

    def instruction(p):
        return f"Add an event '{p['title']}' to my calendar on {p['date']} from {p['start']} to {p['end']}."

    def solve(c, p):
        c("calendar__create_event", title=p["title"], start=f"{p['date']}T{p['start']}",
          end=f"{p['date']}T{p['end']}")

    def expect(w, p):
        return Expectation(added=[Added("events", {"title": p["title"], "start": f"{p['date']}T{p['start']}",
                                                   "end": f"{p['date']}T{p['end']}"}, "event created")])


@template(1, "lite", ("notes",), "Find the note's id with a search; delete only that note.", into=LITE_TEMPLATES)
class DeleteNote:
    def setup(w, rng, d):
        title = f"Old {_pick(rng, ['packing', 'moving', 'party', 'garage'])} {_pick(rng, NOTE_WORDS)} " \
                f"{int(rng.integers(100, 999))}"
        n = add_note(w, title, "No longer needed.", [_pick(rng, ["personal", "travel"])], _day(w, -200))
        return {"title": title, "id": n["id"]}

    def instruction(p):
        return f"Delete my note titled '{p['title']}'."

    def solve(c, p):
        hit = next(n for n in c("notes__search_notes", query=p["title"])["results"] if n["title"] == p["title"])
        c("notes__delete_note", note_id=hit["id"])

    def expect(w, p):
        return Expectation(removed=[Removed("notes", p["id"], "note deleted")])


# --- warm-start chains: carry a value out of one tool result into the next call (format only; the
# train templates' workflows are not among them: no login, no update/delete after a calendar
# search, no file reading)

@template(2, "lite", ("calendar", "contacts"),
          "The attendee is an email address; look it up in the contacts.", into=LITE_TEMPLATES)
class AttendeePhone:
    def setup(w, rng, d):
        person = fresh_person(w, rng, d)
        title = f"{_pick(rng, ['Coffee with', 'Review with', 'Walk with', 'Call with'])} " \
                f"{person['first_name']} #{int(rng.integers(10, 99))}"
        day = _day(w, int(rng.integers(1, 30)))
        add_event(w, title, f"{day}T10:00", f"{day}T10:30", "", [person["email"]])
        return {"title": title, "phone": person["phone"]}

    def instruction(p):
        return f"What is the phone number of the person invited to my '{p['title']}' event?"

    def solve(c, p):
        email = c("calendar__search_events", query=p["title"])["results"][0]["attendees"][0]
        return c("contacts__search_contacts", query=email)["results"][0]["phone"]

    def expect(w, p):
        return Expectation(answer=p["phone"])


@template(2, "lite", ("contacts", "notes"), "Copy the phone number from the contact.", into=LITE_TEMPLATES)
class NoteContactPhone:
    def setup(w, rng, d):
        person = fresh_person(w, rng, d)
        return {"name": _full(person), "phone": person["phone"], "title": f"Phone of {person['first_name']}"}

    def instruction(p):
        return f"Create a note titled '{p['title']}' whose content is the phone number of my contact {p['name']}."

    def solve(c, p):
        phone = c.contact(p["name"])["phone"]
        c("notes__create_note", title=p["title"], content=phone)

    def expect(w, p):
        return Expectation(added=[Added("notes", {"title": p["title"], "content": Contains(p["phone"])},
                                        "note created")])


@template(2, "lite", ("contacts",), "Find the contact's id with a search; delete only that contact.",
          into=LITE_TEMPLATES)
class DeleteContact:
    def setup(w, rng, d):
        person = fresh_person(w, rng, d)
        return {"name": _full(person), "id": person["id"]}

    def instruction(p):
        return f"Delete {p['name']} from my contacts."

    def solve(c, p):
        c("contacts__delete_contact", contact_id=c.contact(p["name"])["id"])

    def expect(w, p):
        return Expectation(removed=[Removed("contacts", p["id"], "contact deleted")])


#: every template ToolWorld-Lite can draw or grade by name
CATALOG: dict[str, Template] = {**TEMPLATES, **LITE_TEMPLATES}

#: the three disjoint template groups (gold app calls per task in the comments)
GROUPS: dict[str, tuple[str, ...]] = {
    # format warm start: copy a value out of one tool result, or make one change
    "warm": ("contact_phone",      # 1: search_contacts -> phone
             "product_price",      # 1: search_products -> price
             "event_date",         # 1: search_events -> date
             "event_location",     # 1: search_events -> location
             "current_weekday",    # 1: show_current_datetime -> weekday
             "add_contact",        # 1: add_contact
             "create_note",        # 1: create_note
             "create_event",       # 1: create_event
             "attendee_phone",     # 2: search_events -> search_contacts(attendee email) -> phone
             "note_contact_phone",  # 2: search_contacts -> create_note(content=phone)
             "delete_contact"),    # 2: search_contacts -> delete_contact(id)
    # trained on; evaluated on new instances
    "train": ("bank_balance",          # 4: login chain -> show_balance
              "count_unread",          # 4: login chain -> search_emails(unread_only) -> total_results
              "update_contact_phone",  # 2: search_contacts -> update_contact(id)
              "delete_event",          # 2: search_events(dates) -> delete_event(id)
              "reschedule_event",      # 2: search_events -> update_event(id)
              "wifi_password",         # 2: search_files -> read_file(path)
              "count_relationship"),   # 1: search_contacts(relationship) -> total_results
    # held out: the same rules on new kinds of task
    "heldout": ("latest_order_status",  # 4: login chain (shop) -> search_orders
                "largest_payment",      # 4: login chain (bank) -> search_transactions(dates, out)
                "note_tag_count",       # 1: list_tags
                "delete_note",          # 2: search_notes -> delete_note(id)
                "tag_notes"),           # 3-4: search_notes -> update_note(id, tags kept)
}


def shown_apps(tmpl: Template) -> tuple[str, ...]:
    """The apps whose tools a task's prompt lists: the template's own, plus the supervisor where a
    login is needed (its passwords and the username)."""
    login = any(a in LOGIN_APPS for a in tmpl.apps) and "supervisor" not in tmpl.apps
    return (("supervisor",) if login else ()) + tmpl.apps


_SHORT_TYPES = {"string": "str", "integer": "int", "number": "float", "boolean": "bool", "array": "list"}


def _param(p: Param) -> str:
    if p.required:
        return f"{p.name}: {_SHORT_TYPES.get(p.type, p.type)}"
    return f"{p.name}={[] if p.default is None else p.default!r}"


def _signature(a: Api) -> str:
    """``name(required: type, optional=default)``: the API's full parameter list, tersely."""
    return f"{a.tool_name}({', '.join(_param(p) for p in a.all_params())})"


def lite_system_prompt(apps: tuple[str, ...] | list[str]) -> str:
    """The system prompt: the call format, how to finish, and the tools of ``apps`` only."""
    tools = [_signature(a) for a in APIS.values() if a.app in apps]
    return ("You act for the user on their apps. Call a tool by writing exactly:\n"
            '<tool_call>{"name": "TOOL", "arguments": {...}}</tool_call>\n'
            "Each result comes back in <tool_response>. When done, call complete_task, with "
            'answer="..." (just the value) if the task asks a question, with no arguments if it asks '
            "for changes. Change nothing else.\nTools:\n"
            + "\n".join(tools + ["api_docs(app='', api='')", "complete_task(answer='')"]))


@functools.cache
def _needed_apps(name: str) -> frozenset[str]:
    """The apps one instance's gold solution calls, plus the template's declared apps (the calls a
    template makes do not depend on the seed, only their arguments do)."""
    tmpl = CATALOG[name]
    env = ToolWorldEnv(difficulty="easy", task_split="all")
    env.catalog = CATALOG
    env.reset(seed=0, options={"template": name})
    return frozenset(tmpl.apps) | {g.name.split("__")[0] for g in env.gold if "__" in g.name}


class ToolWorldLiteEnv(ToolWorldEnv):
    """ToolWorld with short tasks and a per-task tool listing (see the module docstring).
    ``group`` picks a template group of :data:`GROUPS`; ``templates`` names the templates instead;
    ``apps`` lists one fixed set of apps in every prompt instead of each task's own."""

    catalog = CATALOG

    def __init__(self, group: str = "train", templates: tuple[str, ...] | list[str] | None = None,
                 apps: tuple[str, ...] | list[str] | None = None, difficulty: str = "easy",
                 max_calls_per_turn: int = 5, format_penalty: float = -0.1, partial_reward: bool = False,
                 max_result_chars: int = 6000, render_mode: str | None = None) -> None:
        super().__init__(difficulty=difficulty, task_split="all", max_calls_per_turn=max_calls_per_turn,
                         format_penalty=format_penalty, partial_reward=partial_reward,
                         max_result_chars=max_result_chars, render_mode=render_mode)
        if templates is None and group not in GROUPS:
            raise ValueError(f"ToolWorld-Lite: unknown group {group!r}; known: {', '.join(GROUPS)}")
        pool = list(GROUPS[group] if templates is None else templates)
        if not pool:
            raise ValueError(f"ToolWorld-Lite: the template list is empty (group {group!r}, templates={templates!r})")
        unknown = [t for t in pool if t not in CATALOG]
        if unknown:
            raise ValueError(f"ToolWorld-Lite: unknown template(s) {', '.join(map(repr, unknown))}; "
                             f"known: {', '.join(CATALOG)}")
        self.group = group if templates is None else "custom"
        self.apps = None if apps is None else tuple(apps)
        for name in pool:
            shown = set(self.apps if self.apps is not None else shown_apps(CATALOG[name]))
            missing = sorted(_needed_apps(name) - shown)
            if missing:
                raise ValueError(f"ToolWorld-Lite: template {name!r} needs app {missing[0]!r}, which its "
                                 f"prompt does not show (shown: {', '.join(sorted(shown))})")
        self.pool = pool

    def _prompt(self, tmpl: Template) -> list[dict]:
        apps = self.apps if self.apps is not None else shown_apps(tmpl)
        return [self.system(lite_system_prompt(apps)), self.user(f"Task: {tmpl.instruction(self.params)}")]


def validate_lite(template: str, seeds: range | list[int], difficulty: str = "easy") -> list[str]:
    """Replay the gold solution of a Lite template for every seed; return the failures (empty
    when every gold call succeeds and the grade is full marks)."""
    return replay_failures(ToolWorldLiteEnv(templates=[template], difficulty=difficulty), seeds)
