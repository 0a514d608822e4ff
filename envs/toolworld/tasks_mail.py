"""ToolWorld templates of the email app: count, send, reply, forward, mark and delete mail."""

from __future__ import annotations

import numpy as np

from agentsd.envs.toolworld.grader import Added, Changed, Contains, Expectation, Includes, Removed, SetEq
from agentsd.envs.toolworld.tasks_base import _contact_email, _day, _full, _pick, _plant_mail, fresh_person, template
from agentsd.envs.toolworld.world import add_file

__all__ = ["CountUnread", "EmailContact", "ReplyLatestEmail", "DeleteEmailsFrom", "MarkReadFrom",
           "EmailFile", "ForwardReceipts"]


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
