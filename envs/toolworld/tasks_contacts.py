"""ToolWorld templates of the contacts app: look up, add and update contacts."""

from __future__ import annotations

import re

from agentsd.envs.toolworld.grader import Added, Changed, Expectation
from agentsd.envs.toolworld.tasks_base import _full, _pick, _plant_mail, fresh_person, template
from agentsd.envs.toolworld.world import FIRST, LAST, RELATIONSHIPS

__all__ = ["ContactPhone", "CountRelationship", "AddContact", "UpdateContactPhone", "ContactFromEmail"]


def _unused_name(w, rng):
    """A first and last name no contact has yet (drawn in pairs until one is free)."""
    names = {_full(c) for c in w.tables["contacts"].values()}
    while True:
        first, last = _pick(rng, FIRST), _pick(rng, LAST)
        if f"{first} {last}" not in names:
            return first, last


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


@template(1, "train", ("contacts",), "Pass every field, including the relationship.")
class AddContact:
    def setup(w, rng, d):
        first, last = _unused_name(w, rng)
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


@template(3, "train", ("email", "contacts"),
          "The phone number is in the email signature; the sender is not a contact yet.")
class ContactFromEmail:
    def setup(w, rng, d):
        first, last = _unused_name(w, rng)
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
