"""The eight simulated apps of ToolWorld and their 55 API functions.

Each function is declared with :func:`agentsd.envs.toolworld.api.api` (typed parameters, description,
return value) and takes the :class:`~agentsd.envs.toolworld.world.World` first. Apps raise
:class:`~agentsd.envs.toolworld.api.AppError` for not-found ids, bad values, missing permission,
conflicts and insufficient funds; the dispatcher turns those into error observations. Money is
stored in integer cents and shown as dollars. Long lists are paginated (``page`` from 1).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from agentsd.envs.toolworld.api import APPS, AppError, Param, api, paginate
from agentsd.envs.toolworld.world import (
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
    to_cents,
)

APPS.update({
    "supervisor": "who you are: your profile, your app passwords and the current date and time",
    "contacts": "the people you know: search, add, update and delete contacts",
    "email": "your mailbox (needs login): search, read, send, reply, forward and delete emails",
    "calendar": "your calendar: search, create, update and delete events",
    "notes": "your notes with tags: search, read, create, update and delete notes",
    "files": "your file system: list directories, read, write, move and delete files",
    "bank": "your bank account (needs login): balance, transactions, payments and payment requests",
    "shop": "an online shop (login needed for cart and orders): products, cart, checkout, orders",
})

P = Param
PAGE = P("page", "integer", "page number, from 1", 1)
SHOP_ACCOUNT = "orders@shop.example"
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[a-z]{2,}$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DT_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}$")


def _need(cond: bool, message: str, kind: str = "invalid_argument") -> None:
    if not cond:
        raise AppError(kind, message)


def _email_ok(addr: str, what: str) -> str:
    _need(bool(_EMAIL_RE.match(addr.strip().lower())), f"{what} {addr[:60]!r} is not an email address")
    return addr.strip().lower()


def _date_ok(value: str, what: str) -> str:
    _need(bool(_DATE_RE.match(value)), f"{what} must be a date like 2025-03-14, got {value[:40]!r}")
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        raise AppError("invalid_argument", f"{what} {value!r} is not a real date") from None
    return value


def _datetime_ok(value: str, what: str) -> str:
    _need(bool(_DT_RE.match(value)), f"{what} must look like 2025-03-14T15:00, got {value[:40]!r}")
    try:
        dt.datetime.fromisoformat(value)
    except ValueError:
        raise AppError("invalid_argument", f"{what} {value!r} is not a real date and time") from None
    return value


def _amount_ok(amount: float) -> int:
    _need(amount > 0, f"amount must be positive, got {amount}")
    _need(amount <= 1_000_000, f"amount {amount} is above the 1,000,000 limit")  # before rounding: no overflow
    _need(abs(amount * 100 - round(amount * 100)) < 1e-6, f"amount {amount} has more than 2 decimals")
    return to_cents(amount)


def _login(w: World, app: str, username: str, password: str) -> dict[str, Any]:
    if username.strip().lower() != w.user["email"] or password != w.passwords[app]:
        raise AppError("permission_denied", f"wrong username or password for {app}")
    token = w.token_for(app)
    w.sessions[token] = app
    return {"access_token": token}


def _logout(w: World, app: str) -> dict[str, Any]:
    for tok in [t for t, a in w.sessions.items() if a == app]:
        del w.sessions[tok]
    return {"message": f"logged out of {app}"}


def _has(text: str, query: str) -> bool:
    return query.strip().casefold() in text.casefold()


# ---------------------------------------------------------------------------------------------
# supervisor

@api("supervisor", "Show your own profile (name, email, phone, birthday).",
     "{first_name, last_name, email, phone, birthday}")
def show_profile(w: World) -> dict:
    return dict(w.user)


@api("supervisor", "Show your passwords for the apps that need a login.", "a list of {app, password}")
def show_account_passwords(w: World) -> list:
    return [{"app": a, "password": p} for a, p in w.passwords.items()]


@api("supervisor", "Show the current date and time.", "{datetime, date, weekday}")
def show_current_datetime(w: World) -> dict:
    return {"datetime": w.now, "date": w.now[:10], "weekday": w.today().strftime("%A")}


# ---------------------------------------------------------------------------------------------
# contacts

def _contact_view(c: dict) -> dict:
    return dict(c)


@api("contacts", "Search contacts by name, email or phone (substring, case-insensitive).",
     "a page of contacts {id, first_name, last_name, email, phone, relationship}",
     P("query", "string", "text to look for; empty lists everyone", ""),
     P("relationship", "string", "only contacts with this relationship; empty for all", ""),
     PAGE)
def search_contacts(w: World, query: str, relationship: str, page: int) -> dict:
    hits = [_contact_view(c) for c in w.tables["contacts"].values()
            if _has(f"{c['first_name']} {c['last_name']} {c['email']} {c['phone']}", query)
            and (not relationship or c["relationship"] == relationship.strip().lower())]
    return paginate(hits, page, w.page_size)


@api("contacts", "Show one contact.", "{id, first_name, last_name, email, phone, relationship}",
     P("contact_id", "integer", "the contact's id"))
def show_contact(w: World, contact_id: int) -> dict:
    return _contact_view(w.record("contacts", contact_id, "contact"))


@api("contacts", "Add a contact.", "{contact_id}",
     P("first_name", "string", "first name"), P("last_name", "string", "last name"),
     P("email", "string", "email address"), P("phone", "string", "phone number", ""),
     P("relationship", "string", "how you know them", "friend", enum=RELATIONSHIPS), mutates=True)
def add_contact(w: World, first_name: str, last_name: str, email: str, phone: str,
                relationship: str) -> dict:
    _need(bool(first_name.strip()), "first_name must not be empty")
    email = _email_ok(email, "email")
    _need(all(c["email"] != email for c in w.tables["contacts"].values()),
          f"a contact with email {email} already exists", "conflict")
    cid = w.new_id("contacts")
    w.tables["contacts"][cid] = {"id": cid, "first_name": first_name.strip(), "last_name": last_name.strip(),
                                 "email": email, "phone": phone.strip(), "relationship": relationship}
    return {"contact_id": cid}


@api("contacts", "Update fields of a contact; empty strings leave a field unchanged.", "the updated contact",
     P("contact_id", "integer", "the contact's id"), P("first_name", "string", "new first name", ""),
     P("last_name", "string", "new last name", ""), P("email", "string", "new email", ""),
     P("phone", "string", "new phone number", ""),
     P("relationship", "string", "new relationship", "", enum=("",) + RELATIONSHIPS), mutates=True)
def update_contact(w: World, contact_id: int, first_name: str, last_name: str, email: str, phone: str,
                   relationship: str) -> dict:
    c = w.record("contacts", contact_id, "contact")
    if email:
        email = _email_ok(email, "email")
    new = {k: v.strip() for k, v in (("first_name", first_name), ("last_name", last_name),
                                      ("email", email), ("phone", phone),
                                      ("relationship", relationship)) if v.strip()}
    c.update(new)
    return _contact_view(c)


@api("contacts", "Delete a contact.", "{message}", P("contact_id", "integer", "the contact's id"),
     mutates=True)
def delete_contact(w: World, contact_id: int) -> dict:
    w.record("contacts", contact_id, "contact")
    del w.tables["contacts"][contact_id]
    return {"message": f"contact {contact_id} deleted"}


# ---------------------------------------------------------------------------------------------
# email

def _email_summary(e: dict) -> dict:
    return {k: e[k] for k in ("id", "folder", "sender", "recipients", "subject", "date", "read", "attachments")}


@api("email", "Log in to the email app.", "{access_token}",
     P("username", "string", "your email address"), P("password", "string", "your email password"),
     name="login")
def email_login(w: World, username: str, password: str) -> dict:
    return _login(w, "email", username, password)


@api("email", "Log out of the email app (the access token stops working).", "{message}", auth=True,
     name="logout")
def email_logout(w: World) -> dict:
    return _logout(w, "email")


@api("email", "Search emails, newest first. The query matches sender, subject and body.",
     "a page of email summaries {id, folder, sender, recipients, subject, date, read, attachments}",
     P("query", "string", "text to look for; empty for all", ""),
     P("folder", "string", "which folder", "inbox", enum=("inbox", "sent", "all")),
     P("sender", "string", "only emails whose sender address contains this", ""),
     P("unread_only", "boolean", "only unread emails", False), PAGE, auth=True)
def search_emails(w: World, query: str, folder: str, sender: str, unread_only: bool, page: int) -> dict:
    hits = [e for e in w.tables["emails"].values()
            if (folder == "all" or e["folder"] == folder) and _has(e["sender"], sender)
            and (not unread_only or not e["read"])
            and _has(f"{e['sender']} {e['subject']} {e['body']}", query)]
    hits.sort(key=lambda e: (e["date"], e["id"]), reverse=True)
    return paginate([_email_summary(e) for e in hits], page, w.page_size)


@api("email", "Show one email with its body (does not change its read flag).",
     "{id, folder, sender, recipients, subject, body, date, read, attachments}",
     P("email_id", "integer", "the email's id"), auth=True)
def show_email(w: World, email_id: int) -> dict:
    return dict(w.record("emails", email_id, "email"))


def _send(w: World, recipients: list[str], subject: str, body: str, attachments: list[str]) -> dict:
    _need(bool(recipients), "recipients must name at least one address")
    rcpts = [_email_ok(r, "recipient") for r in recipients]
    for path in attachments:
        _need(path in w.tables["files"], f"attachment {path[:80]!r} is not a file; use a path from "
              "files__list_directory", "not_found")
    _need(bool(subject.strip()), "subject must not be empty")
    e = add_email(w, w.user["email"], rcpts, subject.strip(), body, w.now, True, "sent", attachments)
    return {"email_id": e["id"]}


@api("email", "Send an email.", "{email_id}",
     P("recipients", "array", "recipient email addresses", items="string"),
     P("subject", "string", "subject line"), P("body", "string", "message text", ""),
     P("attachments", "array", "paths of files (from the files app) to attach", [], items="string"),
     auth=True, mutates=True)
def send_email(w: World, recipients: list, subject: str, body: str, attachments: list) -> dict:
    return _send(w, recipients, subject, body, attachments)


@api("email", "Reply to an email's sender (subject becomes 'Re: ...').", "{email_id}",
     P("email_id", "integer", "the email to reply to"), P("body", "string", "message text"),
     auth=True, mutates=True)
def reply_to_email(w: World, email_id: int, body: str) -> dict:
    e = w.record("emails", email_id, "email")
    _need(e["folder"] == "inbox", "you can only reply to emails in your inbox")
    return _send(w, [e["sender"]], "Re: " + e["subject"], body, [])


@api("email", "Forward an email (with its attachments) to other people.", "{email_id}",
     P("email_id", "integer", "the email to forward"),
     P("recipients", "array", "recipient email addresses", items="string"),
     P("body", "string", "text to add above the forwarded message", ""), auth=True, mutates=True)
def forward_email(w: World, email_id: int, recipients: list, body: str) -> dict:
    e = w.record("emails", email_id, "email")
    text = f"{body}\n\n---------- Forwarded message ----------\nFrom: {e['sender']}\n{e['body']}"
    return _send(w, recipients, "Fwd: " + e["subject"], text, list(e["attachments"]))


@api("email", "Delete an email.", "{message}", P("email_id", "integer", "the email's id"),
     auth=True, mutates=True)
def delete_email(w: World, email_id: int) -> dict:
    w.record("emails", email_id, "email")
    del w.tables["emails"][email_id]
    return {"message": f"email {email_id} deleted"}


@api("email", "Mark an email as read or unread.", "{id, read}",
     P("email_id", "integer", "the email's id"), P("read", "boolean", "true for read, false for unread"),
     auth=True, mutates=True)
def mark_email(w: World, email_id: int, read: bool) -> dict:
    e = w.record("emails", email_id, "email")
    e["read"] = read
    return {"id": email_id, "read": read}


# ---------------------------------------------------------------------------------------------
# calendar

@api("calendar", "Search events by title or location, optionally between two dates (inclusive), "
     "sorted by start time.", "a page of events {id, title, start, end, location, attendees}",
     P("query", "string", "text in the title or location; empty for all", ""),
     P("start_date", "string", "earliest start date, YYYY-MM-DD; empty for no limit", ""),
     P("end_date", "string", "latest start date, YYYY-MM-DD; empty for no limit", ""), PAGE)
def search_events(w: World, query: str, start_date: str, end_date: str, page: int) -> dict:
    lo = _date_ok(start_date, "start_date") if start_date else "0000"
    hi = _date_ok(end_date, "end_date") if end_date else "9999"
    hits = [dict(e) for e in w.tables["events"].values()
            if lo <= e["start"][:10] <= hi and _has(f"{e['title']} {e['location']}", query)]
    hits.sort(key=lambda e: (e["start"], e["id"]))
    return paginate(hits, page, w.page_size)


@api("calendar", "Show one event.", "{id, title, start, end, location, attendees}",
     P("event_id", "integer", "the event's id"))
def show_event(w: World, event_id: int) -> dict:
    return dict(w.record("events", event_id, "event"))


@api("calendar", "Create an event.", "{event_id}",
     P("title", "string", "title"), P("start", "string", "start, YYYY-MM-DDTHH:MM"),
     P("end", "string", "end, YYYY-MM-DDTHH:MM (after start)"),
     P("location", "string", "where", ""),
     P("attendees", "array", "email addresses of the people invited", [], items="string"), mutates=True)
def create_event(w: World, title: str, start: str, end: str, location: str, attendees: list) -> dict:
    _need(bool(title.strip()), "title must not be empty")
    _datetime_ok(start, "start")
    _datetime_ok(end, "end")
    _need(end > start, f"end {end} must be after start {start}")
    e = add_event(w, title.strip(), start, end, location, [_email_ok(a, "attendee") for a in attendees])
    return {"event_id": e["id"]}


@api("calendar", "Update an event; empty strings (and a missing attendees list) leave fields unchanged.",
     "the updated event",
     P("event_id", "integer", "the event's id"), P("title", "string", "new title", ""),
     P("start", "string", "new start, YYYY-MM-DDTHH:MM", ""), P("end", "string", "new end", ""),
     P("location", "string", "new location", ""),
     P("attendees", "array", "the new full list of attendee emails", None, items="string"), mutates=True)
def update_event(w: World, event_id: int, title: str, start: str, end: str, location: str,
                 attendees: list | None) -> dict:
    e = w.record("events", event_id, "event")
    new_start = _datetime_ok(start, "start") if start else e["start"]
    new_end = _datetime_ok(end, "end") if end else e["end"]
    _need(new_end > new_start, f"end {new_end} must be after start {new_start}")
    if attendees is not None:
        e["attendees"] = [_email_ok(a, "attendee") for a in attendees]
    e.update(start=new_start, end=new_end)
    if title.strip():
        e["title"] = title.strip()
    if location.strip():
        e["location"] = location.strip()
    return dict(e)


@api("calendar", "Delete an event.", "{message}", P("event_id", "integer", "the event's id"), mutates=True)
def delete_event(w: World, event_id: int) -> dict:
    w.record("events", event_id, "event")
    del w.tables["events"][event_id]
    return {"message": f"event {event_id} deleted"}


# ---------------------------------------------------------------------------------------------
# notes

def _note_summary(n: dict) -> dict:
    return {k: n[k] for k in ("id", "title", "tags", "updated")}


@api("notes", "Search notes by title and content, optionally by tag; newest first.",
     "a page of note summaries {id, title, tags, updated}",
     P("query", "string", "text in the title or content; empty for all", ""),
     P("tag", "string", "only notes with this tag; empty for all", ""), PAGE)
def search_notes(w: World, query: str, tag: str, page: int) -> dict:
    hits = [n for n in w.tables["notes"].values()
            if (not tag or tag.strip().lower() in n["tags"]) and _has(f"{n['title']} {n['content']}", query)]
    hits.sort(key=lambda n: (n["updated"], n["id"]), reverse=True)
    return paginate([_note_summary(n) for n in hits], page, w.page_size)


@api("notes", "Show one note with its content.", "{id, title, content, tags, updated}",
     P("note_id", "integer", "the note's id"))
def show_note(w: World, note_id: int) -> dict:
    return dict(w.record("notes", note_id, "note"))


def _tags_ok(tags: list[str]) -> list[str]:
    out = sorted({t.strip().lower() for t in tags if t.strip()})
    _need(all(re.fullmatch(r"[a-z0-9_-]{1,30}", t) for t in out),
          "tags must be short words of letters, digits, '-' or '_'")
    return out


@api("notes", "Create a note.", "{note_id}", P("title", "string", "title"),
     P("content", "string", "text", ""), P("tags", "array", "tags", [], items="string"), mutates=True)
def create_note(w: World, title: str, content: str, tags: list) -> dict:
    _need(bool(title.strip()), "title must not be empty")
    return {"note_id": add_note(w, title.strip(), content, _tags_ok(tags), w.now[:10])["id"]}


@api("notes", "Update a note; empty strings (and a missing tags list) leave fields unchanged.",
     "the updated note", P("note_id", "integer", "the note's id"), P("title", "string", "new title", ""),
     P("content", "string", "new content (replaces the old)", ""),
     P("tags", "array", "the new full list of tags", None, items="string"), mutates=True)
def update_note(w: World, note_id: int, title: str, content: str, tags: list | None) -> dict:
    n = w.record("notes", note_id, "note")
    if title.strip():
        n["title"] = title.strip()
    if content:
        n["content"] = content
    if tags is not None:
        n["tags"] = _tags_ok(tags)
    n["updated"] = w.now[:10]
    return dict(n)


@api("notes", "Delete a note.", "{message}", P("note_id", "integer", "the note's id"), mutates=True)
def delete_note(w: World, note_id: int) -> dict:
    w.record("notes", note_id, "note")
    del w.tables["notes"][note_id]
    return {"message": f"note {note_id} deleted"}


@api("notes", "List every tag in use with how many notes carry it.", "a list of {tag, count}")
def list_tags(w: World) -> list:
    counts: dict[str, int] = {}
    for n in w.tables["notes"].values():
        for t in n["tags"]:
            counts[t] = counts.get(t, 0) + 1
    return [{"tag": t, "count": c} for t, c in sorted(counts.items())]


# ---------------------------------------------------------------------------------------------
# files

def _path_ok(path: str) -> str:
    p = "/" + path.strip().strip("/")
    _need(re.fullmatch(r"(/[\w.\- ]+)+|/", p) is not None and ".." not in p.split("/"),
          f"{path[:80]!r} is not a valid absolute path like /documents/report.txt")
    return p


def _is_dir(w: World, path: str) -> bool:
    prefix = path.rstrip("/") + "/"
    return path == "/" or any(f.startswith(prefix) for f in w.tables["files"])


@api("files", "List a directory: its files and subdirectories, sorted by name.",
     "a page of entries {path, type ('file' or 'directory'), modified, size}",
     P("path", "string", "directory path", "/"), PAGE)
def list_directory(w: World, path: str, page: int) -> dict:
    path = _path_ok(path)
    _need(_is_dir(w, path), f"no directory {path!r}", "not_found")
    prefix = path.rstrip("/") + "/"
    entries: dict[str, dict] = {}
    for f in w.tables["files"].values():
        if f["path"].startswith(prefix):
            head = f["path"][len(prefix):].split("/")[0]
            full = prefix + head
            if full == f["path"]:
                entries[full] = {"path": full, "type": "file", "modified": f["modified"],
                                 "size": len(f["content"])}
            else:
                entries.setdefault(full, {"path": full, "type": "directory"})
    return paginate([entries[k] for k in sorted(entries)], page, w.page_size)


@api("files", "Read a file.", "{path, content, modified}", P("path", "string", "file path"))
def read_file(w: World, path: str) -> dict:
    return dict(w.record("files", _path_ok(path), "file"))


@api("files", "Write a file (directories are created as needed).", "{path}",
     P("path", "string", "file path"), P("content", "string", "the text to write"),
     P("overwrite", "boolean", "replace an existing file", False), mutates=True)
def write_file(w: World, path: str, content: str, overwrite: bool) -> dict:
    path = _path_ok(path)
    _need(path != "/" and path not in _dirs(w), f"{path} is a directory")
    _need(overwrite or path not in w.tables["files"],
          f"{path} already exists; pass overwrite=true to replace it", "conflict")
    add_file(w, path, content, w.now[:10])
    return {"path": path}


def _dirs(w: World) -> set[str]:
    out = set()
    for p in w.tables["files"]:
        parts = p.split("/")[1:-1]
        out.update("/" + "/".join(parts[: i + 1]) for i in range(len(parts)))
    return out


@api("files", "Move or rename a file. A destination that is a directory keeps the file name.",
     "{path} (the new path)", P("source", "string", "current file path"),
     P("destination", "string", "new file path, or a directory"), mutates=True)
def move_file(w: World, source: str, destination: str) -> dict:
    source = _path_ok(source)
    f = w.record("files", source, "file")
    dest = _path_ok(destination)
    if destination.strip().endswith("/") or dest in _dirs(w) or dest == "/":
        dest = dest.rstrip("/") + "/" + source.rsplit("/", 1)[1]
    _need(dest not in w.tables["files"], f"{dest} already exists", "conflict")
    del w.tables["files"][source]
    w.tables["files"][dest] = {**f, "path": dest}
    return {"path": dest}


@api("files", "Delete a file.", "{message}", P("path", "string", "file path"), mutates=True)
def delete_file(w: World, path: str) -> dict:
    path = _path_ok(path)
    w.record("files", path, "file")
    del w.tables["files"][path]
    return {"message": f"{path} deleted"}


@api("files", "Search files whose path or content contains the query.",
     "a page of {path, modified, size}", P("query", "string", "text to look for"), PAGE)
def search_files(w: World, query: str, page: int) -> dict:
    _need(bool(query.strip()), "query must not be empty")
    hits = [{"path": f["path"], "modified": f["modified"], "size": len(f["content"])}
            for f in sorted(w.tables["files"].values(), key=lambda f: f["path"])
            if _has(f["path"] + " " + f["content"], query)]
    return paginate(hits, page, w.page_size)


# ---------------------------------------------------------------------------------------------
# bank

def _txn_view(t: dict, me: str) -> dict:
    return {"id": t["id"], "direction": "out" if t["sender"] == me else "in",
            "counterparty": t["receiver"] if t["sender"] == me else t["sender"],
            "amount": fmt_money(t["amount"]), "description": t["description"], "date": t["date"]}


def _req_view(r: dict) -> dict:
    return {**r, "amount": fmt_money(r["amount"])}


@api("bank", "Log in to the bank app.", "{access_token}",
     P("username", "string", "your email address"), P("password", "string", "your bank password"),
     name="login")
def bank_login(w: World, username: str, password: str) -> dict:
    return _login(w, "bank", username, password)


@api("bank", "Log out of the bank app.", "{message}", auth=True, name="logout")
def bank_logout(w: World) -> dict:
    return _logout(w, "bank")


@api("bank", "Show your account balance.", "{balance}", auth=True)
def show_balance(w: World) -> dict:
    return {"balance": fmt_money(w.tables["accounts"]["bank"]["balance"])}


@api("bank", "Search your transactions, newest first. The query matches the other party's email and "
     "the description.", "a page of {id, direction ('in' or 'out'), counterparty, amount, description, date}",
     P("query", "string", "text to look for; empty for all", ""),
     P("direction", "string", "money in, out, or both", "all", enum=("all", "in", "out")),
     P("start_date", "string", "earliest date, YYYY-MM-DD; empty for no limit", ""),
     P("end_date", "string", "latest date, YYYY-MM-DD; empty for no limit", ""), PAGE, auth=True)
def search_transactions(w: World, query: str, direction: str, start_date: str, end_date: str,
                        page: int) -> dict:
    lo = _date_ok(start_date, "start_date") if start_date else "0000"
    hi = _date_ok(end_date, "end_date") if end_date else "9999"
    me = w.user["email"]
    views = [_txn_view(t, me) for t in w.tables["transactions"].values() if lo <= t["date"][:10] <= hi]
    hits = [v for v in views if direction in ("all", v["direction"])
            and _has(f"{v['counterparty']} {v['description']}", query)]
    hits.sort(key=lambda v: (v["date"], v["id"]), reverse=True)
    return paginate(hits, page, w.page_size)


@api("bank", "Show one transaction.", "{id, direction, counterparty, amount, description, date}",
     P("transaction_id", "integer", "the transaction's id"), auth=True)
def show_transaction(w: World, transaction_id: int) -> dict:
    return _txn_view(w.record("transactions", transaction_id, "transaction"), w.user["email"])


def _pay(w: World, receiver: str, cents: int, description: str) -> dict:
    acct = w.tables["accounts"]["bank"]
    if cents > acct["balance"]:
        raise AppError("insufficient_funds", f"balance {fmt_money(acct['balance'])} is less than "
                       f"{fmt_money(cents)}")
    acct["balance"] -= cents
    return add_transaction(w, w.user["email"], receiver, cents, description, w.now[:10])


@api("bank", "Send money to someone by email address.", "{transaction_id, balance}",
     P("receiver_email", "string", "who gets the money"), P("amount", "number", "dollars, e.g. 12.5"),
     P("description", "string", "what it is for", ""), auth=True, mutates=True)
def send_payment(w: World, receiver_email: str, amount: float, description: str) -> dict:
    receiver = _email_ok(receiver_email, "receiver_email")
    _need(receiver != w.user["email"], "you cannot pay yourself")
    t = _pay(w, receiver, _amount_ok(amount), description.strip())
    return {"transaction_id": t["id"], "balance": fmt_money(w.tables["accounts"]["bank"]["balance"])}


@api("bank", "Search payment requests: incoming (people asking you to pay) or outgoing (yours), newest first.",
     "a page of {id, requester, payer, amount, description, date, status}",
     P("status", "string", "which status", "pending", enum=("pending", "approved", "declined", "all")),
     P("direction", "string", "incoming or outgoing", "incoming", enum=("incoming", "outgoing")),
     PAGE, auth=True)
def search_payment_requests(w: World, status: str, direction: str, page: int) -> dict:
    me = w.user["email"]
    hits = [_req_view(r) for r in w.tables["payment_requests"].values()
            if status in ("all", r["status"]) and (r["payer"] if direction == "incoming" else r["requester"]) == me]
    hits.sort(key=lambda r: (r["date"], r["id"]), reverse=True)
    return paginate(hits, page, w.page_size)


def _incoming_pending(w: World, request_id: int) -> dict:
    r = w.record("payment_requests", request_id, "payment request")
    _need(r["payer"] == w.user["email"], f"request {request_id} is not addressed to you", "permission_denied")
    _need(r["status"] == "pending", f"request {request_id} is already {r['status']}", "conflict")
    return r


@api("bank", "Approve (pay) a pending payment request addressed to you.", "{transaction_id, balance}",
     P("request_id", "integer", "the request's id"), auth=True, mutates=True)
def approve_payment_request(w: World, request_id: int) -> dict:
    r = _incoming_pending(w, request_id)
    t = _pay(w, r["requester"], r["amount"], r["description"])
    r["status"] = "approved"
    return {"transaction_id": t["id"], "balance": fmt_money(w.tables["accounts"]["bank"]["balance"])}


@api("bank", "Decline a pending payment request addressed to you.", "{message}",
     P("request_id", "integer", "the request's id"), auth=True, mutates=True)
def decline_payment_request(w: World, request_id: int) -> dict:
    _incoming_pending(w, request_id)["status"] = "declined"
    return {"message": f"request {request_id} declined"}


@api("bank", "Ask someone to pay you.", "{request_id}",
     P("payer_email", "string", "who should pay"), P("amount", "number", "dollars"),
     P("description", "string", "what it is for", ""), auth=True, mutates=True)
def create_payment_request(w: World, payer_email: str, amount: float, description: str) -> dict:
    payer = _email_ok(payer_email, "payer_email")
    _need(payer != w.user["email"], "you cannot request money from yourself")
    r = add_request(w, w.user["email"], _amount_ok(amount), description.strip(), w.now[:10], payer=payer)
    return {"request_id": r["id"]}


# ---------------------------------------------------------------------------------------------
# shop

def _product_view(p: dict) -> dict:
    return {**p, "price": fmt_money(p["price"])}


def _order_view(o: dict) -> dict:
    return {**o, "total": fmt_money(o["total"]),
            "items": [{**i, "unit_price": fmt_money(i["unit_price"])} for i in o["items"]]}


@api("shop", "Log in to the shop.", "{access_token}",
     P("username", "string", "your email address"), P("password", "string", "your shop password"),
     name="login")
def shop_login(w: World, username: str, password: str) -> dict:
    return _login(w, "shop", username, password)


@api("shop", "Log out of the shop.", "{message}", auth=True, name="logout")
def shop_logout(w: World) -> dict:
    return _logout(w, "shop")


@api("shop", "Search products by name or category.", "a page of {id, name, category, price, stock}",
     P("query", "string", "text in the name; empty for all", ""),
     P("category", "string", "only this category; empty for all", ""), PAGE)
def search_products(w: World, query: str, category: str, page: int) -> dict:
    hits = [_product_view(p) for p in w.tables["products"].values()
            if _has(p["name"], query) and (not category or p["category"] == category.strip().lower())]
    return paginate(hits, page, w.page_size)


@api("shop", "Show one product.", "{id, name, category, price, stock}",
     P("product_id", "integer", "the product's id"))
def show_product(w: World, product_id: int) -> dict:
    return _product_view(w.record("products", product_id, "product"))


@api("shop", "Add a product to your cart (adds to the quantity already there).", "the cart",
     P("product_id", "integer", "the product's id"), P("quantity", "integer", "how many", 1),
     auth=True, mutates=True)
def add_to_cart(w: World, product_id: int, quantity: int) -> dict:
    p = w.record("products", product_id, "product")
    _need(1 <= quantity <= 100, f"quantity must be 1..100, got {quantity}")
    line = w.tables["cart"].get(product_id, {"product_id": product_id, "quantity": 0})
    _need(line["quantity"] + quantity <= p["stock"],
          f"only {p['stock']} of {p['name']} in stock", "conflict")
    w.tables["cart"][product_id] = {**line, "quantity": line["quantity"] + quantity}
    return show_cart(w)


@api("shop", "Remove a product from your cart.", "the cart",
     P("product_id", "integer", "the product's id"), auth=True, mutates=True)
def remove_from_cart(w: World, product_id: int) -> dict:
    w.record("cart", product_id, "cart line for product")
    del w.tables["cart"][product_id]
    return show_cart(w)


@api("shop", "Show your cart.", "{items: [{product_id, name, quantity, unit_price}], total}", auth=True)
def show_cart(w: World) -> dict:
    items = [{"product_id": pid, "name": w.tables["products"][pid]["name"], "quantity": line["quantity"],
              "unit_price": fmt_money(w.tables["products"][pid]["price"])}
             for pid, line in sorted(w.tables["cart"].items())]
    total = sum(w.tables["products"][pid]["price"] * line["quantity"] for pid, line in w.tables["cart"].items())
    return {"items": items, "total": fmt_money(total)}


@api("shop", "Buy everything in the cart, paid from your bank account.", "{order_id, total}",
     auth=True, mutates=True)
def checkout(w: World) -> dict:
    _need(bool(w.tables["cart"]), "your cart is empty", "conflict")
    lines = [(w.tables["products"][pid], line["quantity"]) for pid, line in sorted(w.tables["cart"].items())]
    total = sum(p["price"] * q for p, q in lines)
    _pay(w, SHOP_ACCOUNT, total, "shop order")
    for p, q in lines:
        p["stock"] -= q
    o = add_order(w, lines, w.now[:10], "processing")
    w.tables["cart"].clear()
    return {"order_id": o["id"], "total": fmt_money(total)}


@api("shop", "Search your orders, newest first.", "a page of orders {id, items, total, date, status}",
     P("status", "string", "only this status; empty for all", "",
       enum=("", "processing", "shipped", "delivered", "returned")), PAGE, auth=True)
def search_orders(w: World, status: str, page: int) -> dict:
    hits = [_order_view(o) for o in w.tables["orders"].values() if not status or o["status"] == status]
    hits.sort(key=lambda o: (o["date"], o["id"]), reverse=True)
    return paginate(hits, page, w.page_size)


@api("shop", "Show one order.", "{id, items, total, date, status}",
     P("order_id", "integer", "the order's id"), auth=True)
def show_order(w: World, order_id: int) -> dict:
    return _order_view(w.record("orders", order_id, "order"))


@api("shop", "Return a delivered order; the total is refunded to your bank account.", "{message, refund}",
     P("order_id", "integer", "the order's id"), auth=True, mutates=True)
def return_order(w: World, order_id: int) -> dict:
    o = w.record("orders", order_id, "order")
    _need(o["status"] == "delivered", f"order {order_id} is {o['status']}; only delivered orders "
          "can be returned", "conflict")
    o["status"] = "returned"
    w.tables["accounts"]["bank"]["balance"] += o["total"]
    add_transaction(w, SHOP_ACCOUNT, w.user["email"], o["total"], f"refund for order {order_id}", w.now[:10])
    return {"message": f"order {order_id} returned", "refund": fmt_money(o["total"])}
