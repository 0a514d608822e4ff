"""ToolWorld templates of the calendar app: look up, delete, move and announce events."""

from __future__ import annotations

import datetime as dt
import re

import numpy as np

from agentsd.envs.toolworld.grader import Added, Changed, Contains, Expectation, Removed, SetEq
from agentsd.envs.toolworld.tasks_base import (
    _contact_email,
    _day,
    _full,
    _pick,
    _plant_mail,
    _plant_meeting,
    fresh_person,
    template,
)
from agentsd.envs.toolworld.world import add_event

__all__ = ["EventDate", "DeleteEvent", "RescheduleEvent", "RemindAttendees", "ScheduleFromEmail", "PostponeAndNotify"]


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
