"""The ToolWorld state: plain tables of records, generated from a seed, diffable.

A :class:`World` is a dict of tables (``contacts``, ``emails``, ``events``, ``notes``, ``files``,
``accounts``, ``transactions``, ``payment_requests``, ``products``, ``cart``, ``orders``), each a
dict of record id -> record dict, plus metadata (the user, passwords, the current time, the page
size). Everything is JSON-like data, so a world deep-copies, pickles and diffs cheaply.
:func:`generate_world` draws one from a ``numpy.random.Generator`` only; :func:`diff_worlds`
compares two worlds record by record (login sessions are not state and are ignored).
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agentsd.envs.toolworld.api import AppError

__all__ = ["World", "Draws", "WorldSize", "SIZES", "generate_world", "diff_worlds", "WorldDiff", "TABLES",
           "fmt_money", "to_cents"]

TABLES = ("contacts", "emails", "events", "notes", "files", "accounts", "transactions",
          "payment_requests", "products", "cart", "orders")

FIRST = ["Alice", "Bruno", "Chen", "Dana", "Elena", "Farid", "Grace", "Hiro", "Ines", "Jonas",
         "Kira", "Liam", "Maya", "Nikhil", "Olga", "Pablo", "Quinn", "Rosa", "Samir", "Tara",
         "Umar", "Vera", "Wen", "Ximena", "Yusuf", "Zoe", "Amara", "Bodhi", "Carmen", "Diego",
         "Eva", "Felix", "Gita", "Hugo", "Ivy", "Jamal", "Keiko", "Lars", "Mira", "Noah"]
LAST = ["Abbott", "Bauer", "Castillo", "Dubois", "Eriksen", "Fischer", "Gupta", "Haddad",
        "Ivanova", "Jensen", "Kowalski", "Lopez", "Moreau", "Nakamura", "Okafor", "Petrov",
        "Quintero", "Rossi", "Sato", "Tanaka", "Usman", "Varga", "Weber", "Xu", "Yilmaz",
        "Zhang", "Alvarez", "Brennan", "Costa", "Dimitrov"]
RELATIONSHIPS = ("friend", "coworker", "family", "neighbor", "classmate")
EMAIL_TOPICS = ["Quarterly report", "Lunch on Thursday?", "Your subscription", "Photos from the trip",
                "Project timeline", "Receipt for your purchase", "Weekend plans", "Book club",
                "Invoice due", "Team offsite", "Recipe you asked for", "Flight confirmation",
                "Meeting notes", "Birthday party", "Apartment viewing", "Receipt: monthly gym fee"]
EVENT_TITLES = ["Team sync", "Dentist appointment", "Yoga class", "Project review", "1:1 with manager",
                "Book club", "Dinner at Luigi's", "Gym session", "Coffee chat", "Board game night",
                "Parent-teacher meeting", "Haircut", "Car service", "Dinner at Sakura"]
LOCATIONS = ["Office 4B", "Main St 12", "Online", "City Library", "Cafe Aroma", "Home"]
NOTE_TAGS = ("work", "personal", "recipes", "travel", "ideas", "shopping", "books", "finance")
NOTE_WORDS = ["plan", "draft", "list", "summary", "idea", "thoughts", "todo", "review", "log"]
PRODUCTS = [("Wireless Mouse", "electronics"), ("USB-C Cable", "electronics"), ("Desk Lamp", "home"),
            ("Coffee Beans 1kg", "grocery"), ("Green Tea", "grocery"), ("Yoga Mat", "sports"),
            ("Running Shoes", "sports"), ("Notebook A5", "office"), ("Gel Pens (10)", "office"),
            ("Water Bottle", "sports"), ("Headphones", "electronics"), ("Phone Stand", "electronics"),
            ("Scented Candle", "home"), ("Throw Pillow", "home"), ("Dark Chocolate", "grocery"),
            ("Olive Oil", "grocery"), ("Backpack", "travel"), ("Travel Adapter", "travel"),
            ("Sunscreen", "travel"), ("Board Game", "toys"), ("Puzzle 1000pc", "toys"),
            ("Plant Pot", "home"), ("Stapler", "office"), ("Keyboard", "electronics"),
            ("Tennis Balls", "sports"), ("Honey Jar", "grocery"), ("Picture Frame", "home"),
            ("Card Game", "toys"), ("Luggage Tag", "travel"), ("Desk Organizer", "office")]
FILE_DIRS = ("/documents", "/downloads", "/photos", "/documents/work")
FILE_STEMS = ["budget", "resume", "lease", "itinerary", "notes", "scan", "invoice", "draft",
              "report", "checklist", "recipe", "photo", "contract", "minutes"]


@dataclass(frozen=True)
class WorldSize:
    """How much of everything a world holds (the difficulty knob scales it)."""

    contacts: int
    emails: int
    events: int
    notes: int
    files: int
    transactions: int
    requests: int
    products: int
    orders: int
    page_size: int


SIZES: dict[str, WorldSize] = {
    "easy": WorldSize(12, 25, 15, 15, 14, 20, 6, 20, 3, 10),
    "medium": WorldSize(30, 60, 30, 30, 28, 50, 10, 30, 6, 5),
    "hard": WorldSize(60, 120, 60, 50, 45, 100, 16, 30, 10, 5),
}


def fmt_money(cents: int) -> float:
    return round(cents / 100, 2)


def to_cents(amount: float | int) -> int:
    return int(round(float(amount) * 100))


@dataclass
class World:
    """All app state of one episode. ``tables[name][id]`` is a record dict."""

    tables: dict[str, dict[Any, dict[str, Any]]]
    user: dict[str, Any]
    passwords: dict[str, str]
    now: str  # ISO datetime "YYYY-MM-DDTHH:MM"
    page_size: int
    salt: str
    next_id: dict[str, int] = field(default_factory=dict)
    sessions: dict[str, str] = field(default_factory=dict)  # token -> app

    # -- helpers the apps use -----------------------------------------------------------------
    def new_id(self, table: str) -> int:
        self.next_id[table] = self.next_id.get(table, 0) + 1
        return self.next_id[table]

    def token_for(self, app: str) -> str:
        """The access token ``login`` hands out for ``app`` (stable within a world, so a replayed
        call sequence sees the same token)."""
        return hashlib.sha256(f"{self.salt}:{app}".encode()).hexdigest()[:20]

    def require_token(self, app: str, token: str) -> None:
        if self.sessions.get(token) != app:
            raise AppError("permission_denied",
                           f"invalid or expired access_token for {app}; call {app}__login first")

    def today(self) -> dt.date:
        return dt.date.fromisoformat(self.now[:10])

    def record(self, table: str, key: Any, what: str) -> dict[str, Any]:
        rec = self.tables[table].get(key)
        if rec is None:
            raise AppError("not_found", f"no {what} with id {key!r}")
        return rec

    def copy(self) -> World:
        """A deep copy. Hand-written because ``copy.deepcopy`` dominated reset time; records
        hold scalars, lists of scalars and lists of flat dicts (order lines) only."""
        tables = {t: {k: _copy_record(r) for k, r in tab.items()} for t, tab in self.tables.items()}
        return World(tables, dict(self.user), dict(self.passwords), self.now, self.page_size, self.salt,
                     dict(self.next_id), dict(self.sessions))


def _copy_record(r: dict[str, Any]) -> dict[str, Any]:
    out = r.copy()
    for f, v in r.items():
        if type(v) is list:
            out[f] = [x.copy() if type(x) is dict else x for x in v]
        elif type(v) is dict:
            out[f] = copy.deepcopy(v)
    return out


class Draws:
    """Scalar draws from a ``numpy.random.Generator`` in blocks: numpy's per-call overhead made
    world generation slow, and a world needs thousands of small draws. Deterministic given the
    generator's state."""

    def __init__(self, rng: np.random.Generator, block: int = 2048) -> None:
        self.rng, self.block = rng, block
        self.buf: list[float] = []
        self.i = 0

    def random(self) -> float:
        if self.i >= len(self.buf):
            self.buf, self.i = self.rng.random(self.block).tolist(), 0
        self.i += 1
        return self.buf[self.i - 1]

    def integers(self, lo: int, hi: int | None = None) -> int:
        """An int in ``[lo, hi)`` (or ``[0, lo)`` with one argument), like ``Generator.integers``."""
        if hi is None:
            lo, hi = 0, lo
        return lo + min(int(self.random() * (hi - lo)), hi - lo - 1)


# ---------------------------------------------------------------------------------------------
# generation

def _pick(rng: np.random.Generator, seq: Any) -> Any:
    return seq[int(rng.integers(len(seq)))]


def _date(base: dt.date, days: int) -> str:
    return (base + dt.timedelta(days=days)).isoformat()


def _person_email(first: str, last: str, taken: set[str]) -> str:
    base = f"{first}.{last}".lower()
    email, n = f"{base}@mail.example", 1
    while email in taken:
        n += 1
        email = f"{base}{n}@mail.example"
    taken.add(email)
    return email


def generate_world(gen: np.random.Generator, size: WorldSize) -> World:
    """A deterministic world drawn from ``gen``: the user, contacts, mail, calendar, notes,
    files, a bank account with history and requests, a shop with orders."""
    rng = Draws(gen)
    today = dt.date(2025, 1, 6) + dt.timedelta(days=int(rng.integers(0, 300)))
    now = f"{today.isoformat()}T09:00"
    taken: set[str] = set()
    first, last = _pick(rng, FIRST), _pick(rng, LAST)
    user = {"first_name": first, "last_name": last, "email": _person_email(first, last, taken),
            "phone": f"+1-555-{int(rng.integers(1000, 9999))}",
            "birthday": _date(today, -int(rng.integers(8000, 15000)))}
    passwords = {app: f"{_pick(rng, NOTE_WORDS)}-{int(rng.integers(1000, 9999))}"
                 for app in ("email", "bank", "shop")}
    w = World({t: {} for t in TABLES}, user, passwords, now, size.page_size,
              salt=f"{int(rng.integers(1 << 30)):x}")
    people = [add_person(w, rng, taken) for _ in range(size.contacts)]
    # strangers: people who write or pay but are not in the contacts
    strangers = [(f"{_pick(rng, FIRST)} {_pick(rng, LAST)}", None) for _ in range(4)]
    strangers = [(n, _person_email(*n.split(), taken)) for n, _ in strangers]
    everyone = [(f"{p['first_name']} {p['last_name']}", p["email"]) for p in people] + strangers
    for _ in range(size.emails):
        name, email = _pick(rng, everyone)
        add_email(w, sender=email, recipients=[user["email"]], subject=_pick(rng, EMAIL_TOPICS),
                  body=f"Hi {first},\n\n{_pick(rng, _BODIES)}\n\nBest,\n{name.split()[0]}",
                  date=f"{_date(today, -int(rng.integers(0, 90)))}T{int(rng.integers(7, 22)):02d}:"
                       f"{int(rng.integers(0, 4)) * 15:02d}",
                  read=bool(rng.random() < 0.6))
    for _ in range(size.events):
        day = _date(today, int(rng.integers(-30, 45)))
        hour = int(rng.integers(8, 20))
        guests = sorted({_pick(rng, people)["email"] for _ in range(rng.integers(0, 4))}) if people else []
        add_event(w, _pick(rng, EVENT_TITLES), f"{day}T{hour:02d}:00", f"{day}T{hour + 1:02d}:00",
                  _pick(rng, LOCATIONS), guests)
    for _ in range(size.notes):
        tags = sorted({_pick(rng, NOTE_TAGS) for _ in range(int(rng.integers(1, 3)))})
        title = f"{tags[0].capitalize()} {_pick(rng, NOTE_WORDS)} {int(rng.integers(1, 99))}"
        add_note(w, title, f"{_pick(rng, _BODIES)}", tags, _date(today, -int(rng.integers(0, 120))))
    for _ in range(size.files):
        d = _pick(rng, FILE_DIRS)
        path = f"{d}/{_pick(rng, FILE_STEMS)}_{int(rng.integers(1, 999))}.{_pick(rng, ('txt', 'pdf', 'csv'))}"
        if path not in w.tables["files"]:
            add_file(w, path, f"{_pick(rng, _BODIES)}\n", _date(today, -int(rng.integers(0, 200))))
    balance = int(rng.integers(150_000, 600_000))
    w.tables["accounts"]["bank"] = {"id": "bank", "owner": user["email"], "balance": balance}
    for _ in range(size.transactions):
        _, email = _pick(rng, everyone)
        outgoing = rng.random() < 0.5
        add_transaction(w, user["email"] if outgoing else email, email if outgoing else user["email"],
                        int(rng.integers(500, 15_000)), _pick(rng, _PAY_REASONS),
                        _date(today, -int(rng.integers(1, 120))))
    for _ in range(size.requests):
        _, email = _pick(rng, everyone)
        add_request(w, email, int(rng.integers(500, 12_000)), _pick(rng, _PAY_REASONS),
                    _date(today, -int(rng.integers(0, 30))),
                    status=_pick(rng, ("pending", "pending", "pending", "approved", "declined")))
    for name, cat in PRODUCTS[: size.products]:
        pid = w.new_id("products")
        w.tables["products"][pid] = {"id": pid, "name": name, "category": cat,
                                     "price": int(rng.integers(3, 120)) * 100 + int(rng.integers(0, 2)) * 99,
                                     "stock": int(rng.integers(0, 30))}
    for _ in range(size.orders):
        p = w.tables["products"][int(rng.integers(1, size.products + 1))]
        add_order(w, [(p, int(rng.integers(1, 3)))], _date(today, -int(rng.integers(1, 60))),
                  _pick(rng, ("processing", "shipped", "delivered", "delivered")))
    return w


_BODIES = ["Could you take a look when you have a minute?", "Thanks again for yesterday, it was great.",
           "Attached is the summary we discussed.", "Let me know what works for you.",
           "The numbers look better than last month.", "Remember to bring the documents.",
           "I added a few ideas at the end.", "Shopping: milk, eggs, bread, apples.",
           "Flight leaves at 7:40, terminal 2.", "Draft is ready for review."]
_PAY_REASONS = ["groceries", "concert tickets", "rent share", "taxi", "birthday gift", "coffee",
                "utilities", "movie night", "lunch", "book"]


def add_person(w: World, rng: np.random.Generator, taken: set[str], first: str | None = None,
               last: str | None = None, relationship: str | None = None) -> dict[str, Any]:
    first = first or _pick(rng, FIRST)
    last = last or _pick(rng, LAST)
    cid = w.new_id("contacts")
    rec = {"id": cid, "first_name": first, "last_name": last, "email": _person_email(first, last, taken),
           "phone": f"+1-555-{int(rng.integers(1000, 9999))}",
           "relationship": relationship or _pick(rng, RELATIONSHIPS)}
    w.tables["contacts"][cid] = rec
    return rec


def add_email(w: World, sender: str, recipients: list[str], subject: str, body: str, date: str,
              read: bool = True, folder: str = "inbox", attachments: list[str] | None = None) -> dict:
    eid = w.new_id("emails")
    rec = {"id": eid, "folder": folder, "sender": sender, "recipients": list(recipients),
           "subject": subject, "body": body, "date": date, "read": read,
           "attachments": list(attachments or [])}
    w.tables["emails"][eid] = rec
    return rec


def add_event(w: World, title: str, start: str, end: str, location: str, attendees: list[str]) -> dict:
    eid = w.new_id("events")
    rec = {"id": eid, "title": title, "start": start, "end": end, "location": location,
           "attendees": list(attendees)}
    w.tables["events"][eid] = rec
    return rec


def add_note(w: World, title: str, content: str, tags: list[str], updated: str) -> dict:
    nid = w.new_id("notes")
    rec = {"id": nid, "title": title, "content": content, "tags": list(tags), "updated": updated}
    w.tables["notes"][nid] = rec
    return rec


def add_file(w: World, path: str, content: str, modified: str) -> dict:
    rec = {"path": path, "content": content, "modified": modified}
    w.tables["files"][path] = rec
    return rec


def add_transaction(w: World, sender: str, receiver: str, cents: int, description: str,
                    date: str) -> dict:
    tid = w.new_id("transactions")
    rec = {"id": tid, "sender": sender, "receiver": receiver, "amount": cents,
           "description": description, "date": date}
    w.tables["transactions"][tid] = rec
    return rec


def add_request(w: World, requester: str, cents: int, description: str, date: str,
                status: str = "pending", payer: str | None = None) -> dict:
    rid = w.new_id("payment_requests")
    rec = {"id": rid, "requester": requester, "payer": payer or w.user["email"], "amount": cents,
           "description": description, "date": date, "status": status}
    w.tables["payment_requests"][rid] = rec
    return rec


def add_order(w: World, items: list[tuple[dict, int]], date: str, status: str) -> dict:
    oid = w.new_id("orders")
    lines = [{"product_id": p["id"], "name": p["name"], "quantity": q, "unit_price": p["price"]}
             for p, q in items]
    rec = {"id": oid, "items": lines, "total": sum(p["price"] * q for p, q in items), "date": date,
           "status": status}
    w.tables["orders"][oid] = rec
    return rec


# ---------------------------------------------------------------------------------------------
# diffing

@dataclass
class WorldDiff:
    """Record-level changes between two worlds: ``added`` / ``removed`` ids and ``changed``
    ids with the fields that differ, per table."""

    added: dict[str, list[Any]]
    removed: dict[str, list[Any]]
    changed: dict[str, dict[Any, list[str]]]

    def empty(self) -> bool:
        return not (any(self.added.values()) or any(self.removed.values()) or any(self.changed.values()))

    def summary(self) -> list[str]:
        out = [f"added {t}[{k!r}]" for t, ks in self.added.items() for k in ks]
        out += [f"removed {t}[{k!r}]" for t, ks in self.removed.items() for k in ks]
        out += [f"changed {t}[{k!r}].{','.join(fs)}" for t, ch in self.changed.items() for k, fs in ch.items()]
        return out


def diff_worlds(before: World, after: World) -> WorldDiff:
    """Compare every table record by record."""
    added, removed, changed = {}, {}, {}
    for t in TABLES:
        b, a = before.tables[t], after.tables[t]
        added[t] = [k for k in a if k not in b]
        removed[t] = [k for k in b if k not in a]
        ch = {}
        for k in b.keys() & a.keys():
            if b[k] != a[k]:
                ch[k] = sorted(f for f in set(b[k]) | set(a[k]) if b[k].get(f) != a[k].get(f))
        changed[t] = ch
    return WorldDiff(added, removed, changed)
