"""ToolWorld templates of the bank app: balance, payments, transactions and payment requests."""

from __future__ import annotations

import datetime as dt
import re

from agentsd.envs.toolworld.grader import Added, Changed, Contains, Expectation, SetEq
from agentsd.envs.toolworld.tasks_base import (
    _acct,
    _cents,
    _contact_email,
    _day,
    _full,
    _last_friday,
    _money,
    _pay_expect,
    _pick,
    _plant_meeting,
    fresh_person,
    template,
)
from agentsd.envs.toolworld.world import add_event, add_note, add_request, add_transaction, fmt_money

__all__ = ["BankBalance", "PayContact", "ApproveRequestsFrom", "DeclineRequestsOver", "ReceivedTotal",
           "LargestPayment", "PayBackDinner", "SplitBillRequests", "DeclineStrangerRequests",
           "PayAndConfirm"]


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
