"""ToolWorld templates of the notes and files apps: create, count and tag notes; find, move and clean up files."""

from __future__ import annotations

import re

from agentsd.envs.toolworld.grader import Added, AllOf, Changed, Contains, Expectation, Removed, SetEq
from agentsd.envs.toolworld.tasks_base import (
    _contact_email,
    _day,
    _downloads,
    _full,
    _pick,
    _plant_meeting,
    fresh_person,
    template,
)
from agentsd.envs.toolworld.world import NOTE_TAGS, add_file, add_note

__all__ = ["CreateNote", "WifiPassword", "NoteTagCount", "MovePdfs", "CleanupDownloads", "TagNotes",
           "NotesToFileAndEmail", "AttendeeNamesNote"]


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
