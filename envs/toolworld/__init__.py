"""ToolWorld: an offline, AppWorld-style world of stateful apps for tool-using agents.

Eight apps (supervisor, contacts, email, calendar, notes, files, bank, shop) with 55 typed API
functions, login tokens, pagination and app errors; a world generated from the seed; 41 task
templates (9 held out for the test split) graded by comparing the world before and after, with
collateral-damage checks; gold call sequences as privileged views.

What the agent sees (``ToolWorld-v0``, abridged)::

    [system] You operate a person's apps through API calls ... To call a tool, write exactly:
             <tool_call>{"name": "TOOL_NAME", "arguments": {...}}</tool_call> ...
    [user]   Task: Send $23.25 to Keiko Rossi with the description 'taxi'.

A good first action is ``<tool_call>{"name": "contacts__search_contacts", "arguments":
{"query": "Keiko Rossi"}}</tool_call>``; the result comes back as a ``<tool_response>`` (or a
``role: "tool"`` message for OpenAI ``tool_calls``). The episode ends with ``complete_task``;
reward 1.0 when every check passes and nothing else changed, else 0 (``partial_reward=True``
pays the partial credit instead). ``info["grade"]`` lists the checks.

Modules: :mod:`.api` (declarations, dispatch, docs, schemas), :mod:`.world` (state, generation,
diff), :mod:`.apps` (the API functions), :mod:`.grader` (state-based grading), :mod:`.tasks`
(templates and gold solvers), :mod:`.env` (:class:`ToolWorldEnv`), :mod:`.lite` (``ToolWorld-Lite-v0``:
short tasks, a per-task tool listing, warm/train/held-out template groups).
"""

from agentsd.envs.toolworld.env import ToolWorldEnv, all_tools, replay_gold, validate
from agentsd.envs.toolworld.tasks import TEMPLATES

__all__ = ["ToolWorldEnv", "TEMPLATES", "all_tools", "replay_gold", "validate"]
