"""ToolWorld task templates: setup, instruction, gold solver and expectation, per template.

A template plants what its task needs into a freshly generated world (``setup``, drawing from
the episode's RNG), words the task (``instruction``), solves it through the public APIs
(``solve``, run by a recording :class:`Client`: the recorded calls are the gold call sequence)
and states what a correct run changes and answers (``expect``, computed from the world data
directly, independently of the solver). ``validate`` in :mod:`agentsd.envs.toolworld.env` proves that
replaying the gold calls scores full marks.

Levels: 1 = a lookup or one change (1-4 calls), 2 = a search then several changes, 3 = a
workflow across apps (6+ calls). ``split="test"`` templates are held out from training.

The templates live in one module per app, next to this one (``tasks_contacts``, ``tasks_mail``,
``tasks_events``, ``tasks_notes_files``, ``tasks_bank``, ``tasks_shop``; a task across apps lives
with the app it changes or asks about); the template record, its registry, the gold client and the
planting helpers are in ``tasks_base``. This module gathers them: import templates from here.
"""

from agentsd.envs.toolworld.tasks_bank import *  # noqa: F403
from agentsd.envs.toolworld.tasks_base import (
    TEMPLATES,
    Client,
    GoldCall,
    GoldError,
    Template,
    fresh_person,
    template,
    templates_for,
)
from agentsd.envs.toolworld.tasks_contacts import *  # noqa: F403
from agentsd.envs.toolworld.tasks_events import *  # noqa: F403
from agentsd.envs.toolworld.tasks_mail import *  # noqa: F403
from agentsd.envs.toolworld.tasks_notes_files import *  # noqa: F403
from agentsd.envs.toolworld.tasks_shop import *  # noqa: F403

# the star imports register each app module's templates (its __all__ lists their classes)
__all__ = ["Template", "TEMPLATES", "Client", "GoldCall", "GoldError", "templates_for", "template", "fresh_person"]

#: the draw order (the order of the single tasks.py these modules came from): an env picks a template
#: by its position in a pool, so which task a seed draws depends on it. Templates not listed here
#: follow in import order; add a new one at the end.
ORDER = (
    "contact_phone", "count_relationship", "bank_balance", "product_price", "count_unread", "add_contact",
    "create_note", "wifi_password", "note_tag_count", "event_date", "delete_event", "email_contact",
    "pay_contact", "approve_requests_from", "decline_requests_over", "reply_latest_email", "move_pdfs",
    "cleanup_downloads", "update_contact_phone", "reschedule_event", "delete_emails_from", "mark_read_from",
    "tag_notes", "received_total", "latest_order_status", "buy_product", "return_order", "largest_payment",
    "email_file", "forward_receipts", "pay_back_dinner", "notes_to_file_and_email", "remind_attendees",
    "split_bill_requests", "schedule_from_email", "postpone_and_notify", "contact_from_email",
    "buy_cheapest_in_category", "decline_stranger_requests", "attendee_names_note", "pay_and_confirm",
)
_registered = dict(TEMPLATES)
TEMPLATES.clear()  # reordered in place: importers hold this dict
TEMPLATES.update((name, _registered.pop(name)) for name in ORDER)
TEMPLATES.update(_registered)
del _registered
