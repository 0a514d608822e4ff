"""ToolWorld task templates: setup, instruction, gold solver and expectation, per template.

A template plants what its task needs into a freshly generated world (``setup``, drawing from
the episode's RNG), words the task (``instruction``), solves it through the public APIs
(``solve``, run by a recording :class:`Client`: the recorded calls are the gold call sequence)
and states what a correct run changes and answers (``expect``, computed from the world data
directly, independently of the solver). ``validate`` in :mod:`agentsd.envs.toolworld.env` proves that
replaying the gold calls scores full marks.

Levels: 1 = a lookup or one change (1-4 calls), 2 = a search then several changes, 3 = a
workflow across apps (6+ calls). ``split="test"`` templates are held out from training.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from agentsd.envs.toolworld.api import call_api
from agentsd.envs.toolworld.apps import SHOP_ACCOUNT  # importing apps declares the APIs
from agentsd.envs.toolworld.grader import (
    Added,
    AllOf,
    Changed,
    Contains,
    Expectation,
    Includes,
    Lines,
    Removed,
    SetEq,
)
from agentsd.envs.toolworld.world import (
    FIRST,
    LAST,
    NOTE_TAGS,
    RELATIONSHIPS,
    World,
    add_email,
    add_event,
    add_file,
    add_note,
    add_order,
    add_request,
    add_transaction,
    fmt_money,
)

__all__ = ["Template", "TEMPLATES", "Client", "GoldCall", "GoldError", "templates_for"]


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


# ---------------------------------------------------------------------------------------------
# level 1: lookups and single changes

@template(1, "train", ("contacts",), "Search by the full name: another contact may share the first name.")
class ContactPhone:
    def setup(w, rng, d):
        return {"name": _full(fresh_person(w, rng, d))}

    def instruction(p):
        return f"What is the phone number of my contact {p['name']}?"

    def solve(c, p):
        return c.contact(p["name"])["phone"]

    def expect(w, p):
        return Expectation(answer=next(c["phone"] for c in w.tables["contacts"].values() if _full(c) == p["name"]))


@template(1, "test", ("contacts",), "The list is paginated: use total_results or read every page.")
class CountRelationship:
    def setup(w, rng, d):
        return {"relationship": _pick(rng, RELATIONSHIPS)}

    def instruction(p):
        return f"How many of my contacts have the relationship '{p['relationship']}'? Answer with a number."

    def solve(c, p):
        return str(len(c.pages("contacts__search_contacts", relationship=p["relationship"])))

    def expect(w, p):
        n = sum(c["relationship"] == p["relationship"] for c in w.tables["contacts"].values())
        return Expectation(answer=n, answer_kind="number")


@template(1, "train", ("supervisor", "bank"), "The bank needs a login: the password is in the supervisor app.")
class BankBalance:
    def setup(w, rng, d):
        return {}

    def instruction(p):
        return "What is my current bank balance in dollars?"

    def solve(c, p):
        return f"{c('bank__show_balance', access_token=c.token('bank'))['balance']:.2f}"

    def expect(w, p):
        return Expectation(answer=fmt_money(_acct(w)), answer_kind="number")


@template(1, "train", ("shop",), "Product search needs no login.")
class ProductPrice:
    def setup(w, rng, d):
        return {"product": _pick(rng, list(w.tables["products"].values()))["name"]}

    def instruction(p):
        return f"How much does one '{p['product']}' cost in the shop? Answer in dollars."

    def solve(c, p):
        hits = c("shop__search_products", query=p["product"])["results"]
        return f"{next(h['price'] for h in hits if h['name'] == p['product']):.2f}"

    def expect(w, p):
        price = next(x["price"] for x in w.tables["products"].values() if x["name"] == p["product"])
        return Expectation(answer=fmt_money(price), answer_kind="number")


@template(1, "train", ("supervisor", "email"), "Filter with unread_only; total_results counts all pages.")
class CountUnread:
    def setup(w, rng, d):
        return {}

    def instruction(p):
        return "How many unread emails are in my inbox? Answer with a number."

    def solve(c, p):
        r = c("email__search_emails", access_token=c.token("email"), unread_only=True)
        return str(r["total_results"])

    def expect(w, p):
        n = sum(e["folder"] == "inbox" and not e["read"] for e in w.tables["emails"].values())
        return Expectation(answer=n, answer_kind="number")


@template(1, "train", ("contacts",), "Pass every field, including the relationship.")
class AddContact:
    def setup(w, rng, d):
        names = {_full(c) for c in w.tables["contacts"].values()}
        while True:
            first, last = _pick(rng, FIRST), _pick(rng, LAST)
            if f"{first} {last}" not in names:
                break
        return {"first": first, "last": last, "email": f"{first[0]}{last}@work.example".lower(),
                "phone": f"+1-555-{int(rng.integers(1000, 9999))}", "relationship": _pick(rng, RELATIONSHIPS)}

    def instruction(p):
        return (f"Add {p['first']} {p['last']} to my contacts: email {p['email']}, phone {p['phone']}, "
                f"relationship '{p['relationship']}'.")

    def solve(c, p):
        c("contacts__add_contact", first_name=p["first"], last_name=p["last"], email=p["email"],
          phone=p["phone"], relationship=p["relationship"])

    def expect(w, p):
        return Expectation(added=[Added("contacts", {"first_name": p["first"], "last_name": p["last"],
                                                     "email": p["email"], "phone": p["phone"],
                                                     "relationship": p["relationship"]}, "contact added")])


@template(1, "train", ("notes",), "Tags are a list, even for one tag.")
class CreateNote:
    def setup(w, rng, d):
        tag = _pick(rng, NOTE_TAGS)
        item = _pick(rng, ["call the plumber", "renew passport", "buy birthday card", "book dentist"])
        return {"title": f"Reminder {int(rng.integers(100, 999))}", "content": item, "tag": tag}

    def instruction(p):
        return (f"Create a note titled '{p['title']}' with the content '{p['content']}' "
                f"and the tag '{p['tag']}'.")

    def solve(c, p):
        c("notes__create_note", title=p["title"], content=p["content"], tags=[p["tag"]])

    def expect(w, p):
        return Expectation(added=[Added("notes", {"title": p["title"], "content": Contains(p["content"]),
                                                  "tags": SetEq((p["tag"],))}, "note created")])


@template(1, "train", ("files",), "The path is not given: search file contents.")
class WifiPassword:
    def setup(w, rng, d):
        pw = f"{_pick(rng, ['sunset', 'maple', 'orbit', 'harbor'])}-{int(rng.integers(1000, 9999))}"
        folder = _pick(rng, ["/documents/home", "/downloads", "/documents/misc"])
        add_file(w, f"{folder}/router_setup_{int(rng.integers(10, 99))}.txt",
                 f"Router model AX{int(rng.integers(100, 999))}\nWiFi password: {pw}\n", _day(w, -40))
        return {"secret": pw}

    def instruction(p):
        return "One of my files has the WiFi password written in it. What is the password?"

    def solve(c, p):
        hit = c("files__search_files", query="WiFi password")["results"][0]
        text = c("files__read_file", path=hit["path"])["content"]
        return re.search(r"WiFi password: (\S+)", text).group(1)

    def expect(w, p):
        return Expectation(answer=p["secret"])


@template(1, "test", ("notes",), "list_tags gives the counts in one call.")
class NoteTagCount:
    def setup(w, rng, d):
        tags = sorted({t for n in w.tables["notes"].values() for t in n["tags"]})
        return {"tag": _pick(rng, tags)}

    def instruction(p):
        return f"How many of my notes carry the tag '{p['tag']}'? Answer with a number."

    def solve(c, p):
        return str(next(t["count"] for t in c("notes__list_tags") if t["tag"] == p["tag"]))

    def expect(w, p):
        return Expectation(answer=sum(p["tag"] in n["tags"] for n in w.tables["notes"].values()),
                           answer_kind="number")


@template(1, "train", ("calendar",), "Answer with the date only, YYYY-MM-DD.")
class EventDate:
    def setup(w, rng, d):
        kind = _pick(rng, ["Piano recital", "Vet visit", "Tax advisor", "Bike repair"])
        title = f"{kind} #{int(rng.integers(10, 99))}"
        day = _day(w, int(rng.integers(2, 40)))
        add_event(w, title, f"{day}T15:00", f"{day}T16:00", "Town hall", [])
        return {"title": title}

    def instruction(p):
        return f"On which date is my '{p['title']}' event? Answer as YYYY-MM-DD."

    def solve(c, p):
        return c("calendar__search_events", query=p["title"])["results"][0]["start"][:10]

    def expect(w, p):
        return Expectation(answer=next(e["start"][:10] for e in w.tables["events"].values()
                                       if e["title"] == p["title"]))


@template(1, "train", ("calendar",), "There are two events with this title; delete only the one on the given date.")
class DeleteEvent:
    def setup(w, rng, d):
        title = f"Guitar lesson {int(rng.integers(10, 99))}"
        days = sorted(int(x) for x in rng.choice(np.arange(1, 30), size=2, replace=False))
        ids = [add_event(w, title, f"{_day(w, k)}T18:00", f"{_day(w, k)}T19:00", "Music school", [])["id"]
               for k in days]
        pick = int(rng.integers(2))
        return {"title": title, "date": _day(w, days[pick]), "id": ids[pick]}

    def instruction(p):
        return f"Delete my '{p['title']}' event on {p['date']} from the calendar."

    def solve(c, p):
        hits = c("calendar__search_events", query=p["title"], start_date=p["date"], end_date=p["date"])["results"]
        c("calendar__delete_event", event_id=hits[0]["id"])

    def expect(w, p):
        return Expectation(removed=[Removed("events", p["id"], "event deleted")])


# ---------------------------------------------------------------------------------------------
# level 2: search, then one or more changes

def _contact_email(w: World, name: str) -> str:
    return next(c["email"] for c in w.tables["contacts"].values() if _full(c) == name)


@template(2, "train", ("contacts", "email"), "Look up the address in contacts; log in to email first.")
class EmailContact:
    def setup(w, rng, d):
        topic = _pick(rng, ["the budget", "Saturday", "the trip", "the report"])
        return {"name": _full(fresh_person(w, rng, d)), "subject": f"About {topic}",
                "body": f"Can we talk about {topic} tomorrow?"}

    def instruction(p):
        return f"Email {p['name']} with the subject '{p['subject']}' and the body '{p['body']}'."

    def solve(c, p):
        to = c.contact(p["name"])["email"]
        c("email__send_email", access_token=c.token("email"), recipients=[to], subject=p["subject"], body=p["body"])

    def expect(w, p):
        where = {"folder": "sent", "recipients": SetEq((_contact_email(w, p["name"]),)), "subject": p["subject"],
                 "body": Contains(p["body"])}
        return Expectation(added=[Added("emails", where, "email sent")])


@template(2, "train", ("contacts", "bank"), "Amounts are dollars; pay the contact with the exact full name.")
class PayContact:
    def setup(w, rng, d):
        return {"name": _full(fresh_person(w, rng, d)), "cents": _cents(rng, 5, 80),
                "desc": _pick(rng, ["concert tickets", "pizza", "taxi", "gift"])}

    def instruction(p):
        return f"Send ${_money(p['cents'])} to {p['name']} with the description '{p['desc']}'."

    def solve(c, p):
        to = c.contact(p["name"])["email"]
        c("bank__send_payment", access_token=c.token("bank"), receiver_email=to,
          amount=p["cents"] / 100, description=p["desc"])

    def expect(w, p):
        e = _pay_expect(w, [(_contact_email(w, p["name"]), p["cents"])])
        e.added[0].where["description"] = p["desc"]
        return e


@template(2, "train", ("contacts", "bank"),
          "Approve only this person's pending requests (others stay pending); read the balance after paying.")
class ApproveRequestsFrom:
    def setup(w, rng, d):
        person = fresh_person(w, rng, d)
        for _ in range(int(rng.integers(2, 4))):
            add_request(w, person["email"], _cents(rng, 5, 40), _pick(rng, ["lunch", "tickets", "gas"]),
                        _day(w, -int(rng.integers(0, 10))))
        add_request(w, person["email"], _cents(rng, 5, 40), "old dinner", _day(w, -20), status="declined")
        return {"name": _full(person)}

    def instruction(p):
        return f"Approve every pending payment request from {p['name']}, then tell me my new bank balance."

    def solve(c, p):
        email = c.contact(p["name"])["email"]
        tok = c.token("bank")
        for r in c.pages("bank__search_payment_requests", access_token=tok):
            if r["requester"] == email:
                c("bank__approve_payment_request", access_token=tok, request_id=r["id"])
        return f"{c('bank__show_balance', access_token=tok)['balance']:.2f}"

    def expect(w, p):
        email = _contact_email(w, p["name"])
        reqs = [r for r in w.tables["payment_requests"].values()
                if r["requester"] == email and r["status"] == "pending" and r["payer"] == w.user["email"]]
        e = _pay_expect(w, [(email, r["amount"]) for r in reqs], answer_kind="number",
                        answer=fmt_money(_acct(w) - sum(r["amount"] for r in reqs)))
        e.changed += [Changed("payment_requests", r["id"], {"status": "approved"}, f"request {r['id']} approved")
                      for r in reqs]
        return e


@template(2, "test", ("bank",), "Compare amounts strictly; requests not above the threshold stay pending.")
class DeclineRequestsOver:
    def setup(w, rng, d):
        add_request(w, "carla.moss@mail.example", 9000 + _cents(rng, 0, 20), "designer lamp", _day(w, -2))
        add_request(w, "tim.ode@mail.example", 2000, "snacks", _day(w, -1))
        return {"cents": 5000}

    def instruction(p):
        return f"Decline every pending payment request addressed to me that asks for more than ${_money(p['cents'])}."

    def solve(c, p):
        tok = c.token("bank")
        for r in c.pages("bank__search_payment_requests", access_token=tok):
            if r["amount"] * 100 > p["cents"]:
                c("bank__decline_payment_request", access_token=tok, request_id=r["id"])

    def expect(w, p):
        reqs = [r for r in w.tables["payment_requests"].values() if r["status"] == "pending"
                and r["payer"] == w.user["email"] and r["amount"] > p["cents"]]
        return Expectation(changed=[Changed("payment_requests", r["id"], {"status": "declined"},
                                            f"request {r['id']} declined") for r in reqs])


def _plant_mail(w: World, rng: np.random.Generator, sender: str, subjects: list[str], days_ago: list[int],
                read: bool = True, body: str = "See details below.") -> list[dict]:
    return [add_email(w, sender, [w.user["email"]], s, body, f"{_day(w, -k)}T{int(rng.integers(8, 20)):02d}:00", read)
            for s, k in zip(subjects, days_ago)]


@template(2, "train", ("contacts", "email"), "Reply to the newest of the two emails from this person.")
class ReplyLatestEmail:
    def setup(w, rng, d):
        person = fresh_person(w, rng, d)
        a, b = sorted(int(x) for x in rng.choice(np.arange(1, 40), size=2, replace=False))
        _plant_mail(w, rng, person["email"], ["Question about the invoice", "Plans for next week"], [b, a])
        return {"name": _full(person), "body": _pick(rng, ["Sounds good, thanks!", "Yes, that works for me."])}

    def instruction(p):
        return f"Reply to the most recent email I received from {p['name']} with the text '{p['body']}'."

    def solve(c, p):
        email = c.contact(p["name"])["email"]
        latest = c("email__search_emails", access_token=c.token("email"), sender=email)["results"][0]
        c("email__reply_to_email", access_token=c.token("email"), email_id=latest["id"], body=p["body"])

    def expect(w, p):
        email = _contact_email(w, p["name"])
        latest = max((e for e in w.tables["emails"].values() if e["sender"] == email),
                     key=lambda e: (e["date"], e["id"]))
        return Expectation(added=[Added("emails", {"recipients": SetEq((email,)), "subject": "Re: " + latest["subject"],
                                                   "body": Contains(p["body"])}, "reply sent")])


def _downloads(w: World, ext: str) -> list[dict]:
    return [f for p, f in sorted(w.tables["files"].items()) if p.startswith("/downloads/")
            and p.count("/") == 2 and p.endswith(ext)]


@template(2, "train", ("files",), "Only .pdf files directly in /downloads; keep their names.")
class MovePdfs:
    def setup(w, rng, d):
        for i in range(2):
            add_file(w, f"/downloads/statement_{int(rng.integers(100, 999))}{i}.pdf", "PDF statement\n", _day(w, -5))
        add_file(w, f"/downloads/photo_{int(rng.integers(100, 999))}.jpg", "JPEG\n", _day(w, -3))
        return {"dest": "/documents/archive"}

    def instruction(p):
        return f"Move every .pdf file in /downloads into the folder {p['dest']} (keep the file names)."

    def solve(c, p):
        for e in c.pages("files__list_directory", path="/downloads"):
            if e["type"] == "file" and e["path"].endswith(".pdf"):
                c("files__move_file", source=e["path"], destination=p["dest"] + "/" + e["path"].rsplit("/", 1)[1])

    def expect(w, p):
        fs = _downloads(w, ".pdf")
        return Expectation(
            removed=[Removed("files", f["path"], f"{f['path']} moved away") for f in fs],
            added=[Added("files", {"path": p["dest"] + "/" + f["path"].rsplit("/", 1)[1], "content": f["content"]},
                         f"{f['path']} arrived") for f in fs])


@template(2, "train", ("files",), "Compare modification dates; keep files from that date on.")
class CleanupDownloads:
    def setup(w, rng, d):
        add_file(w, "/downloads/old_installer_1.zip", "binary\n", _day(w, -300))
        add_file(w, "/downloads/fresh_scan.pdf", "scan\n", _day(w, -1))
        return {"date": _day(w, -int(rng.integers(60, 150)))}

    def instruction(p):
        return f"Delete every file directly in /downloads whose last modification date is before {p['date']}."

    def solve(c, p):
        for e in c.pages("files__list_directory", path="/downloads"):
            if e["type"] == "file" and e["modified"] < p["date"]:
                c("files__delete_file", path=e["path"])

    def expect(w, p):
        return Expectation(removed=[Removed("files", f["path"], f"{f['path']} deleted")
                                    for f in _downloads(w, "") if f["modified"] < p["date"]])


@template(2, "train", ("contacts",), "Update the phone only; other fields must stay.")
class UpdateContactPhone:
    def setup(w, rng, d):
        return {"name": _full(fresh_person(w, rng, d)), "phone": f"+1-555-{int(rng.integers(1000, 9999))}"}

    def instruction(p):
        return f"{p['name']} has a new phone number, {p['phone']}. Update my contacts."

    def solve(c, p):
        c("contacts__update_contact", contact_id=c.contact(p["name"])["id"], phone=p["phone"])

    def expect(w, p):
        cid = next(c["id"] for c in w.tables["contacts"].values() if _full(c) == p["name"])
        return Expectation(changed=[Changed("contacts", cid, {"phone": p["phone"]}, "phone updated")])


@template(2, "train", ("calendar",), "Keep the same start time and duration on the new date.")
class RescheduleEvent:
    def setup(w, rng, d):
        title = f"Physio session {int(rng.integers(10, 99))}"
        k = int(rng.integers(1, 20))
        h = int(rng.integers(8, 17))
        e = add_event(w, title, f"{_day(w, k)}T{h:02d}:30", f"{_day(w, k)}T{h + 1:02d}:15", "Clinic", [])
        return {"title": title, "id": e["id"], "date": _day(w, k), "new_date": _day(w, k + int(rng.integers(1, 9)))}

    def instruction(p):
        return f"Move my '{p['title']}' event from {p['date']} to {p['new_date']}, same time of day."

    def solve(c, p):
        e = c("calendar__search_events", query=p["title"])["results"][0]
        c("calendar__update_event", event_id=e["id"], start=p["new_date"] + e["start"][10:],
          end=p["new_date"] + e["end"][10:])

    def expect(w, p):
        e = w.tables["events"][p["id"]]
        return Expectation(changed=[Changed("events", p["id"], {"start": p["new_date"] + e["start"][10:],
                                                               "end": p["new_date"] + e["end"][10:]}, "event moved")])


@template(2, "train", ("email",), "Every page of results; only this sender.")
class DeleteEmailsFrom:
    def setup(w, rng, d):
        sender = f"news@{_pick(rng, ['dealzone', 'gadgetly', 'fitmag'])}.example"
        n = int(rng.integers(2, 5))
        _plant_mail(w, rng, sender, [f"Weekly digest #{i}" for i in range(n)], [3 + 7 * i for i in range(n)])
        return {"sender": sender}

    def instruction(p):
        return f"Delete every email in my inbox from {p['sender']}."

    def solve(c, p):
        tok = c.token("email")
        for e in c.pages("email__search_emails", access_token=tok, sender=p["sender"]):
            c("email__delete_email", access_token=tok, email_id=e["id"])

    def expect(w, p):
        return Expectation(removed=[Removed("emails", e["id"], f"email {e['id']} deleted")
                                    for e in w.tables["emails"].values() if e["sender"] == p["sender"]])


@template(2, "train", ("contacts", "email"), "Only the unread ones from this person; the read one is already read.")
class MarkReadFrom:
    def setup(w, rng, d):
        person = fresh_person(w, rng, d)
        _plant_mail(w, rng, person["email"], ["Draft attached", "Quick question"], [2, 5], read=False)
        _plant_mail(w, rng, person["email"], ["Old thread"], [30], read=True)
        return {"name": _full(person)}

    def instruction(p):
        return f"Mark every unread email from {p['name']} as read."

    def solve(c, p):
        email, tok = c.contact(p["name"])["email"], c.token("email")
        for e in c.pages("email__search_emails", access_token=tok, sender=email, unread_only=True):
            c("email__mark_email", access_token=tok, email_id=e["id"], read=True)

    def expect(w, p):
        email = _contact_email(w, p["name"])
        return Expectation(changed=[Changed("emails", e["id"], {"read": True}, f"email {e['id']} read")
                                    for e in w.tables["emails"].values() if e["sender"] == email and not e["read"]])


@template(2, "test", ("notes",), "Keep each note's existing tags and add the new one.")
class TagNotes:
    def setup(w, rng, d):
        word = _pick(rng, ["Garden", "Kitchen", "Wedding", "Marathon"])
        for _ in range(int(rng.integers(2, 4))):
            add_note(w, f"{word} {_pick(rng, ['plan', 'ideas', 'budget'])} {int(rng.integers(1, 99))}",
                     "Details to follow.", [_pick(rng, NOTE_TAGS)], _day(w, -int(rng.integers(1, 50))))
        return {"word": word, "tag": "priority"}

    def instruction(p):
        return f"Add the tag '{p['tag']}' to every note whose title contains '{p['word']}', keeping their other tags."

    def solve(c, p):
        for n in c.pages("notes__search_notes", query=p["word"]):
            if p["word"].lower() in n["title"].lower():
                c("notes__update_note", note_id=n["id"], tags=n["tags"] + [p["tag"]])

    def expect(w, p):
        return Expectation(changed=[
            Changed("notes", n["id"], {"tags": SetEq(tuple(n["tags"]) + (p["tag"],)), "updated": w.now[:10]},
                    f"note {n['id']} tagged")
            for n in w.tables["notes"].values() if p["word"].lower() in n["title"].lower()])


@template(2, "train", ("contacts", "bank"), "Sum every page; only money received from this person.")
class ReceivedTotal:
    def setup(w, rng, d):
        person = fresh_person(w, rng, d)
        for _ in range(int(rng.integers(2, 5))):
            add_transaction(w, person["email"], w.user["email"], _cents(rng, 5, 60), "thanks",
                            _day(w, -int(rng.integers(1, 90))))
        add_transaction(w, w.user["email"], person["email"], _cents(rng, 5, 60), "lunch", _day(w, -3))
        return {"name": _full(person)}

    def instruction(p):
        return f"How much money in total have I received from {p['name']} through the bank? Answer in dollars."

    def solve(c, p):
        email = c.contact(p["name"])["email"]
        ts = c.pages("bank__search_transactions", access_token=c.token("bank"), query=email, direction="in")
        return f"{sum(t['amount'] for t in ts if t['counterparty'] == email):.2f}"

    def expect(w, p):
        email = _contact_email(w, p["name"])
        total = sum(t["amount"] for t in w.tables["transactions"].values()
                    if t["sender"] == email and t["receiver"] == w.user["email"])
        return Expectation(answer=fmt_money(total), answer_kind="number")


@template(2, "train", ("shop",), "Orders need a shop login; the newest order comes first.")
class LatestOrderStatus:
    def setup(w, rng, d):
        p = _pick(rng, list(w.tables["products"].values()))
        add_order(w, [(p, 1)], _day(w, -1), _pick(rng, ["processing", "shipped"]))
        return {}

    def instruction(p):
        return "What is the status of my most recent shop order? Answer with the status word."

    def solve(c, p):
        return c("shop__search_orders", access_token=c.token("shop"))["results"][0]["status"]

    def expect(w, p):
        return Expectation(answer=max(w.tables["orders"].values(), key=lambda o: (o["date"], o["id"]))["status"])


@template(2, "train", ("shop", "bank"), "Checkout pays from the bank account; buy the exact quantity.")
class BuyProduct:
    def setup(w, rng, d):
        p = _pick(rng, list(w.tables["products"].values()))
        qty = int(rng.integers(1, 4))
        p["stock"] = max(p["stock"], qty + 2)
        return {"product": p["name"], "qty": qty}

    def instruction(p):
        return f"Buy {p['qty']} x '{p['product']}' from the shop."

    def solve(c, p):
        tok = c.token("shop")
        hit = next(h for h in c("shop__search_products", query=p["product"])["results"] if h["name"] == p["product"])
        c("shop__add_to_cart", access_token=tok, product_id=hit["id"], quantity=p["qty"])
        c("shop__checkout", access_token=tok)

    def expect(w, p):
        prod = next(x for x in w.tables["products"].values() if x["name"] == p["product"])
        cost = prod["price"] * p["qty"]
        e = _pay_expect(w, [(SHOP_ACCOUNT, cost)])
        e.added.append(Added("orders", {"items": Lines(((prod["id"], p["qty"]),)), "total": cost}, "order placed"))
        e.changed.append(Changed("products", prod["id"], {"stock": prod["stock"] - p["qty"]}, "stock reduced"))
        return e


@template(2, "test", ("shop", "bank"), "Only delivered orders can be returned; find the one with this product.")
class ReturnOrder:
    def setup(w, rng, d):
        used = {i["product_id"] for o in w.tables["orders"].values() for i in o["items"]}
        free = [x for x in w.tables["products"].values() if x["id"] not in used]
        prod = _pick(rng, free)
        o = add_order(w, [(prod, 1)], _day(w, -int(rng.integers(5, 25))), "delivered")
        return {"product": prod["name"], "order_id": o["id"]}

    def instruction(p):
        return (f"Return my delivered shop order that contains '{p['product']}' and tell me how much "
                "money was refunded.")

    def solve(c, p):
        tok = c.token("shop")
        for o in c.pages("shop__search_orders", access_token=tok, status="delivered"):
            if any(i["name"] == p["product"] for i in o["items"]):
                return f"{c('shop__return_order', access_token=tok, order_id=o['id'])['refund']:.2f}"
        raise GoldError("order not found")

    def expect(w, p):
        o = w.tables["orders"][p["order_id"]]
        return Expectation(
            answer=fmt_money(o["total"]), answer_kind="number",
            changed=[Changed("orders", o["id"], {"status": "returned"}, "order returned"),
                     Changed("accounts", "bank", {"balance": _acct(w) + o["total"]}, "refund received")],
            added=[Added("transactions", {"receiver": w.user["email"], "amount": o["total"]}, "refund transaction")])


@template(2, "test", ("bank",), "Restrict to the month by dates; outgoing payments only.")
class LargestPayment:
    def setup(w, rng, d):
        first = w.today().replace(day=1)
        last_month_end = first - dt.timedelta(days=1)
        start = last_month_end.replace(day=1)
        me = w.user["email"]
        existing = [t["amount"] for t in w.tables["transactions"].values()
                    if t["sender"] == me and start.isoformat() <= t["date"] <= last_month_end.isoformat()]
        top = max(existing + [0]) + _cents(rng, 5, 50)
        to = f"{_pick(rng, ['ana', 'luis', 'mei'])}.{int(rng.integers(10, 99))}@pay.example"
        add_transaction(w, me, to, top, "furniture", (start + dt.timedelta(days=int(rng.integers(0, 27)))).isoformat())
        return {"start": start.isoformat(), "end": last_month_end.isoformat(), "month": start.strftime("%B %Y")}

    def instruction(p):
        return f"Who received the largest payment I sent in {p['month']}? Answer with their email address."

    def solve(c, p):
        ts = c.pages("bank__search_transactions", access_token=c.token("bank"), direction="out",
                     start_date=p["start"], end_date=p["end"])
        return max(ts, key=lambda t: t["amount"])["counterparty"]

    def expect(w, p):
        me = w.user["email"]
        t = max((t for t in w.tables["transactions"].values()
                 if t["sender"] == me and p["start"] <= t["date"] <= p["end"]), key=lambda t: t["amount"])
        return Expectation(answer=t["receiver"])


@template(2, "train", ("files", "contacts", "email"), "Attach the file by its path; the recipient is a contact.")
class EmailFile:
    def setup(w, rng, d):
        path = f"/documents/work/q{int(rng.integers(1, 5))}_summary_{int(rng.integers(100, 999))}.pdf"
        add_file(w, path, "Quarterly summary\n", _day(w, -4))
        return {"path": path, "name": _full(fresh_person(w, rng, d, "coworker")), "subject": "Quarterly summary"}

    def instruction(p):
        return f"Email the file {p['path']} to {p['name']} with the subject '{p['subject']}'."

    def solve(c, p):
        to = c.contact(p["name"])["email"]
        c("email__send_email", access_token=c.token("email"), recipients=[to], subject=p["subject"],
          attachments=[p["path"]])

    def expect(w, p):
        return Expectation(added=[Added("emails", {"recipients": SetEq((_contact_email(w, p["name"]),)),
                                                   "subject": p["subject"], "attachments": SetEq((p["path"],))},
                                        "email with attachment sent")])


@template(2, "train", ("email",), "Forward each receipt separately; the accountant's address is given.")
class ForwardReceipts:
    def setup(w, rng, d):
        store = _pick(rng, ["bookbarn", "techhub", "greengrocer"])
        n = int(rng.integers(2, 4))
        subjects = [f"Your receipt #{int(rng.integers(1000, 9999))}" for _ in range(n)]
        _plant_mail(w, rng, f"billing@{store}.example", subjects, [2 + 9 * i for i in range(n)])
        return {"sender": f"billing@{store}.example", "to": "accounts@ledgerly.example"}

    def instruction(p):
        return f"Forward every email I received from {p['sender']} to my accountant at {p['to']}."

    def solve(c, p):
        tok = c.token("email")
        for e in c.pages("email__search_emails", access_token=tok, sender=p["sender"]):
            c("email__forward_email", access_token=tok, email_id=e["id"], recipients=[p["to"]])

    def expect(w, p):
        return Expectation(added=[Added("emails", {"subject": "Fwd: " + e["subject"],
                                                   "recipients": Includes((p["to"],))}, f"email {e['id']} forwarded")
                                  for e in w.tables["emails"].values() if e["sender"] == p["sender"]])


# ---------------------------------------------------------------------------------------------
# level 3: workflows across apps

def _last_friday(today: dt.date) -> dt.date:
    return today - dt.timedelta(days=(today.weekday() - 4) % 7 or 7)


@template(3, "train", ("supervisor", "notes", "contacts", "bank"),
          "The amounts are in a note, not in the calendar; pay each person their own amount, once.")
class PayBackDinner:
    def setup(w, rng, d):
        fri = _last_friday(w.today())
        place = _pick(rng, ["Sakura", "Luigi's", "Casa Verde", "The Lantern"])
        people = [fresh_person(w, rng, d) for _ in range(int(rng.integers(2, 4)))]
        add_event(w, f"Dinner at {place}", f"{fri}T19:30", f"{fri}T21:30", place, [p["email"] for p in people])
        owed = [(_full(p), _cents(rng, 12, 45)) for p in people]
        lines = "\n".join(f"- {n}: ${_money(c)}" for n, c in owed)
        add_note(w, f"Dinner at {place} {fri}", f"Who covered my share:\n{lines}\n", ["finance"], fri.isoformat())
        return {"place": place, "owed": [[n, c] for n, c in owed]}

    def instruction(p):
        return ("Last Friday some friends covered my share of dinner; a note says who paid how much. "
                "Pay each of them back through the bank with the description 'dinner'.")

    def solve(c, p):
        fri = _last_friday(c.today()).isoformat()
        note = next(n for n in c.pages("notes__search_notes", query="Dinner at") if n["title"].endswith(fri))
        text = c("notes__show_note", note_id=note["id"])["content"]
        debts = re.findall(r"- (.+?): \$([\d.]+)", text)
        tok = c.token("bank")
        for name, amount in debts:
            c("bank__send_payment", access_token=tok, receiver_email=c.contact(name)["email"],
              amount=float(amount), description="dinner")

    def expect(w, p):
        return _pay_expect(w, [(_contact_email(w, n), cents) for n, cents in p["owed"]])


@template(3, "train", ("notes", "files", "contacts", "email"),
          "Put every tagged note into the one file, delete only those notes, attach the file path.")
class NotesToFileAndEmail:
    def setup(w, rng, d):
        tag = f"{_pick(rng, ['garden', 'renovation', 'roadtrip'])}-{int(rng.integers(10, 99))}"
        for i in range(int(rng.integers(2, 4))):
            add_note(w, f"{tag.split('-')[0].capitalize()} part {i + 1}", f"Item {int(rng.integers(100, 999))}: "
                     f"{_pick(rng, ['paint', 'tiles', 'seeds', 'maps', 'tent'])}", [tag], _day(w, -i - 1))
        return {"tag": tag, "path": f"/documents/{tag}.txt", "name": _full(fresh_person(w, rng, d)),
                "subject": f"Notes: {tag}"}

    def instruction(p):
        return (f"Collect all my notes tagged '{p['tag']}' into one new file {p['path']} (each note's title "
                f"and content), delete those notes, then email the file to {p['name']} with the subject "
                f"'{p['subject']}'.")

    def solve(c, p):
        notes = [c("notes__show_note", note_id=n["id"]) for n in c.pages("notes__search_notes", tag=p["tag"])]
        c("files__write_file", path=p["path"], content="".join(f"{n['title']}\n{n['content']}\n\n" for n in notes))
        for n in notes:
            c("notes__delete_note", note_id=n["id"])
        to = c.contact(p["name"])["email"]
        c("email__send_email", access_token=c.token("email"), recipients=[to], subject=p["subject"],
          attachments=[p["path"]])

    def expect(w, p):
        notes = [n for n in w.tables["notes"].values() if p["tag"] in n["tags"]]
        body = AllOf(tuple(Contains(x) for n in notes for x in (n["title"], n["content"])))
        return Expectation(
            added=[Added("files", {"path": p["path"], "content": body}, "file holds every note"),
                   Added("emails", {"recipients": SetEq((_contact_email(w, p["name"]),)), "subject": p["subject"],
                                    "attachments": SetEq((p["path"],))}, "file emailed")],
            removed=[Removed("notes", n["id"], f"note {n['id']} deleted") for n in notes])


def _plant_meeting(w: World, rng: np.random.Generator, d: str, title: str) -> tuple[dict, list[dict]]:
    people = [fresh_person(w, rng, d) for _ in range(int(rng.integers(2, 4)))]
    k = int(rng.integers(2, 20))
    e = add_event(w, title, f"{_day(w, k)}T17:00", f"{_day(w, k)}T19:00", "Community hall",
                  [x["email"] for x in people])
    return e, people


@template(3, "train", ("calendar", "email"), "Send one email to all attendees; their addresses are on the event.")
class RemindAttendees:
    def setup(w, rng, d):
        title = f"{_pick(rng, ['Quiz night', 'Hike', 'Potluck'])} {int(rng.integers(10, 99))}"
        e, _ = _plant_meeting(w, rng, d, title)
        return {"title": title, "date": e["start"][:10]}

    def instruction(p):
        return (f"Send one email to everyone invited to my '{p['title']}' event on {p['date']} with the subject "
                f"'Reminder: {p['title']}' and a short reminder in the body.")

    def solve(c, p):
        e = c("calendar__search_events", query=p["title"], start_date=p["date"], end_date=p["date"])["results"][0]
        c("email__send_email", access_token=c.token("email"), recipients=e["attendees"],
          subject=f"Reminder: {p['title']}", body=f"See you at {p['title']} on {p['date']}!")

    def expect(w, p):
        e = next(x for x in w.tables["events"].values() if x["title"] == p["title"])
        return Expectation(added=[Added("emails", {"recipients": SetEq(tuple(e["attendees"])),
                                                   "subject": f"Reminder: {p['title']}"}, "reminder sent")])


@template(3, "test", ("calendar", "bank"), "Divide by attendees plus you; request from each attendee, not from you.")
class SplitBillRequests:
    def setup(w, rng, d):
        title = f"{_pick(rng, ['Boat trip', 'Escape room', 'Cabin weekend'])} {int(rng.integers(10, 99))}"
        e, people = _plant_meeting(w, rng, d, title)
        share = _cents(rng, 10, 60)
        return {"title": title, "total": share * (len(people) + 1), "share": share}

    def instruction(p):
        return (f"I paid ${_money(p['total'])} for '{p['title']}'. Split it equally between me and everyone "
                f"invited to that calendar event, and send each of them a bank payment request for their share "
                f"with the description '{p['title']}'.")

    def solve(c, p):
        e = c("calendar__search_events", query=p["title"])["results"][0]
        share = round(p["total"] / (len(e["attendees"]) + 1)) / 100
        tok = c.token("bank")
        for a in e["attendees"]:
            c("bank__create_payment_request", access_token=tok, payer_email=a, amount=share, description=p["title"])

    def expect(w, p):
        e = next(x for x in w.tables["events"].values() if x["title"] == p["title"])
        return Expectation(added=[Added("payment_requests", {"payer": a, "amount": p["share"], "status": "pending",
                                                             "requester": w.user["email"]}, f"requested from {a}")
                                  for a in e["attendees"]])


@template(3, "test", ("contacts", "email", "calendar"),
          "The proposed time is in the email body; the event lasts one hour and invites the sender.")
class ScheduleFromEmail:
    def setup(w, rng, d):
        person = fresh_person(w, rng, d)
        day, hour = _day(w, int(rng.integers(3, 25))), int(rng.integers(9, 17))
        topic = _pick(rng, ["Budget review", "Design chat", "Mentoring"])
        _plant_mail(w, rng, person["email"], [f"Meeting request: {topic}"], [1], read=False,
                    body=f"Hi! Could we meet on {day} at {hour:02d}:00 for an hour? Cheers")
        return {"name": _full(person), "topic": topic, "start": f"{day}T{hour:02d}:00",
                "end": f"{day}T{hour + 1:02d}:00"}

    def instruction(p):
        return (f"{p['name']} emailed me to propose a meeting time. Create a one-hour calendar event titled "
                f"'{p['topic']}' at that time and invite them.")

    def solve(c, p):
        email, tok = c.contact(p["name"])["email"], c.token("email")
        mail = c("email__search_emails", access_token=tok, sender=email, query="Meeting request")["results"][0]
        body = c("email__show_email", access_token=tok, email_id=mail["id"])["body"]
        day, hour = re.search(r"on (\d{4}-\d{2}-\d{2}) at (\d{2}):00", body).groups()
        c("calendar__create_event", title=p["topic"], start=f"{day}T{hour}:00", end=f"{day}T{int(hour) + 1:02d}:00",
          attendees=[email])

    def expect(w, p):
        return Expectation(added=[Added("events", {"title": p["topic"], "start": p["start"], "end": p["end"],
                                                   "attendees": SetEq((_contact_email(w, p["name"]),))},
                                        "meeting created")])


@template(3, "train", ("calendar", "email"),
          "Move the event by exactly one day, then tell the attendees the new date in one email.")
class PostponeAndNotify:
    def setup(w, rng, d):
        title = f"{_pick(rng, ['Workshop', 'Book launch', 'Planning day'])} {int(rng.integers(10, 99))}"
        e, _ = _plant_meeting(w, rng, d, title)
        return {"title": title, "id": e["id"]}

    def instruction(p):
        return (f"Postpone my '{p['title']}' event by one day (same times), then send one email to all its "
                f"attendees with the subject 'Moved: {p['title']}' and the new date in the body.")

    def solve(c, p):
        e = c("calendar__search_events", query=p["title"])["results"][0]
        nxt = lambda s: (dt.date.fromisoformat(s[:10]) + dt.timedelta(days=1)).isoformat() + s[10:]
        c("calendar__update_event", event_id=e["id"], start=nxt(e["start"]), end=nxt(e["end"]))
        c("email__send_email", access_token=c.token("email"), recipients=e["attendees"],
          subject=f"Moved: {p['title']}", body=f"New date: {nxt(e['start'])[:10]}")

    def expect(w, p):
        e = w.tables["events"][p["id"]]
        nxt = lambda s: (dt.date.fromisoformat(s[:10]) + dt.timedelta(days=1)).isoformat() + s[10:]
        return Expectation(
            changed=[Changed("events", p["id"], {"start": nxt(e["start"]), "end": nxt(e["end"])}, "event postponed")],
            added=[Added("emails", {"recipients": SetEq(tuple(e["attendees"])), "subject": f"Moved: {p['title']}",
                                    "body": Contains(nxt(e["start"])[:10])}, "attendees told the new date")])


@template(3, "train", ("email", "contacts"),
          "The phone number is in the email signature; the sender is not a contact yet.")
class ContactFromEmail:
    def setup(w, rng, d):
        names = {_full(c) for c in w.tables["contacts"].values()}
        while True:
            first, last = _pick(rng, FIRST), _pick(rng, LAST)
            if f"{first} {last}" not in names:
                break
        email = f"{first}.{last}@studio.example".lower()
        phone = f"+1-555-{int(rng.integers(1000, 9999))}"
        _plant_mail(w, rng, email, ["Nice to meet you"], [1], read=False,
                    body=f"Great meeting you at the conference!\n\n{first} {last}\nPhone: {phone}")
        return {"first": first, "last": last, "email": email, "phone": phone}

    def instruction(p):
        return (f"{p['first']} {p['last']} emailed me yesterday. Add them to my contacts as a coworker, with "
                f"their email address and the phone number from their signature.")

    def solve(c, p):
        tok = c.token("email")
        mail = c("email__search_emails", access_token=tok, query=f"{p['first']} {p['last']}")["results"][0]
        full = c("email__show_email", access_token=tok, email_id=mail["id"])
        phone = re.search(r"Phone: (\S+)", full["body"]).group(1)
        c("contacts__add_contact", first_name=p["first"], last_name=p["last"], email=full["sender"], phone=phone,
          relationship="coworker")

    def expect(w, p):
        return Expectation(added=[Added("contacts", {"first_name": p["first"], "last_name": p["last"],
                                                     "email": p["email"], "phone": p["phone"],
                                                     "relationship": "coworker"}, "contact added")])


@template(3, "train", ("shop", "bank"),
          "Buy the cheapest product of the category; read every page of the category first.")
class BuyCheapestInCategory:
    def setup(w, rng, d):
        cats = sorted({p["category"] for p in w.tables["products"].values()})
        cat = _pick(rng, cats)
        for p in w.tables["products"].values():
            if p["category"] == cat:
                p["stock"] = max(p["stock"], 3)
        prods = sorted((p for p in w.tables["products"].values() if p["category"] == cat), key=lambda p: p["price"])
        if len(prods) > 1 and prods[0]["price"] == prods[1]["price"]:
            prods[0]["price"] -= 50
        return {"category": cat}

    def instruction(p):
        return f"Buy one unit of the cheapest product in the shop's '{p['category']}' category."

    def solve(c, p):
        prods = c.pages("shop__search_products", category=p["category"])
        best = min(prods, key=lambda x: x["price"])
        tok = c.token("shop")
        c("shop__add_to_cart", access_token=tok, product_id=best["id"], quantity=1)
        c("shop__checkout", access_token=tok)

    def expect(w, p):
        prod = min((x for x in w.tables["products"].values() if x["category"] == p["category"]),
                   key=lambda x: x["price"])
        e = _pay_expect(w, [(SHOP_ACCOUNT, prod["price"])])
        e.added.append(Added("orders", {"items": Lines(((prod["id"], 1),))}, "order placed"))
        e.changed.append(Changed("products", prod["id"], {"stock": prod["stock"] - 1}, "stock reduced"))
        return e


@template(3, "train", ("bank", "contacts", "email"),
          "Check each requester against the contacts; decline only strangers' requests.")
class DeclineStrangerRequests:
    def setup(w, rng, d):
        add_request(w, f"promo{int(rng.integers(10, 99))}@quickcash.example", _cents(rng, 20, 90), "fee", _day(w, -1))
        return {}

    def instruction(p):
        return ("Decline every pending payment request addressed to me from someone who is not in my contacts. "
                "Leave requests from my contacts alone.")

    def solve(c, p):
        tok = c.token("bank")
        for r in c.pages("bank__search_payment_requests", access_token=tok):
            hits = c("contacts__search_contacts", query=r["requester"])["results"]
            if not any(h["email"] == r["requester"] for h in hits):
                c("bank__decline_payment_request", access_token=tok, request_id=r["id"])

    def expect(w, p):
        known = {c["email"] for c in w.tables["contacts"].values()}
        return Expectation(changed=[Changed("payment_requests", r["id"], {"status": "declined"},
                                            f"request {r['id']} declined")
                                    for r in w.tables["payment_requests"].values()
                                    if r["status"] == "pending" and r["payer"] == w.user["email"]
                                    and r["requester"] not in known])


@template(2, "train", ("calendar", "contacts", "notes"),
          "Find the attendees on the event, look each up in contacts, write their names in the note.")
class AttendeeNamesNote:
    def setup(w, rng, d):
        title = f"{_pick(rng, ['Retro', 'Kickoff', 'Demo day'])} {int(rng.integers(10, 99))}"
        _plant_meeting(w, rng, d, title)
        return {"title": title}

    def instruction(p):
        return (f"Create a note titled 'Guests: {p['title']}' whose content lists the full names of everyone "
                f"invited to my '{p['title']}' event, one per line.")

    def solve(c, p):
        e = c("calendar__search_events", query=p["title"])["results"][0]
        names = []
        for a in e["attendees"]:
            hit = next(h for h in c("contacts__search_contacts", query=a)["results"] if h["email"] == a)
            names.append(f"{hit['first_name']} {hit['last_name']}")
        c("notes__create_note", title=f"Guests: {p['title']}", content="\n".join(names))

    def expect(w, p):
        e = next(x for x in w.tables["events"].values() if x["title"] == p["title"])
        by_email = {c["email"]: _full(c) for c in w.tables["contacts"].values()}
        body = AllOf(tuple(Contains(by_email[a]) for a in e["attendees"]))
        return Expectation(added=[Added("notes", {"title": f"Guests: {p['title']}", "content": body},
                                        "guest list noted")])


@template(3, "test", ("contacts", "bank", "email"),
          "Pay first, then email; the email must state the amount.")
class PayAndConfirm:
    def setup(w, rng, d):
        return {"name": _full(fresh_person(w, rng, d)), "cents": _cents(rng, 20, 150),
                "what": _pick(rng, ["the bike", "the sofa", "the camera"])}

    def instruction(p):
        return (f"Pay {p['name']} ${_money(p['cents'])} for {p['what']} through the bank (description "
                f"'{p['what']}'), then email them with the subject 'Payment sent' mentioning the amount.")

    def solve(c, p):
        to = c.contact(p["name"])["email"]
        c("bank__send_payment", access_token=c.token("bank"), receiver_email=to, amount=p["cents"] / 100,
          description=p["what"])
        c("email__send_email", access_token=c.token("email"), recipients=[to], subject="Payment sent",
          body=f"I just sent you ${_money(p['cents'])} for {p['what']}.")

    def expect(w, p):
        to = _contact_email(w, p["name"])
        e = _pay_expect(w, [(to, p["cents"])])
        e.added.append(Added("emails", {"recipients": SetEq((to,)), "subject": "Payment sent",
                                        "body": Contains(_money(p["cents"]))}, "confirmation emailed"))
        return e
