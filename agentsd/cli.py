"""The ``agentsd`` command line.

Each subcommand lives next to the code it drives and is listed in :data:`COMMANDS` as
``"name": "module:register"``; ``register(subparsers)`` adds the subparser and sets ``func``.
Modules are imported only when their command is listed or run, so ``agentsd --help`` is fast.
``python -m agentsd`` runs the same command. Every flag's help shows its default; the exit
status is 0 on success, 1 on a runtime failure and 2 on a usage error (:data:`EXIT_CODES`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
from typing import Any

#: subcommand name -> "module:function" adding its parser (one line per command)
COMMANDS: dict[str, str] = {
    "envs": "agentsd.cli_basic:register_envs",
    "play": "agentsd.cli_basic:register_play",
    "quickstart": "agentsd.cli_basic:register_quickstart",
    "skills": "agentsd.skills.cli:register",
    "sandbox": "agentsd.sandbox.cli:register",
    "eval-code": "agentsd.code_eval:register",
    "rollout": "agentsd.rollout:register_rollout",
    "show": "agentsd.store:register_show",
    "train": "agentsd.distill.cli:register_train",
    "export": "agentsd.distill.export:register",
}


EXIT_CODES = """exit status: 0 success; 1 runtime failure; 2 usage error (a bad flag or value, an unknown
env id or skill, a missing input file). AGENTSD_DEBUG=1 shows the traceback of an error."""


_STATES_DEFAULT = re.compile(r"\(default\b|\bdefault:|%\(default\)", re.IGNORECASE)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every flag's default, unless its help text already states it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if _STATES_DEFAULT.search(text) or action.default is argparse.SUPPRESS:
            return text
        return super()._get_help_string(action) or ""


#: integer flags that count things, by destination: checked when the command line is parsed,
#: so a bad value is a usage error (exit 2) before any model, env or sandbox loads
POSITIVE_INTS = frozenset({"num_tasks", "samples", "max_tokens", "max_turns", "max_episode_tokens",
                           "max_concurrent", "env_workers", "max_skills", "prompt_version"})
NON_NEGATIVE_INTS = frozenset({"seed", "seed_offset", "top_k", "threads", "warm_steps", "steps",
                               "max_parse_failures"})


def _checked_int(flag: str, low: int):
    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be an integer, got {text!r}") from None
        if v < low:
            raise argparse.ArgumentTypeError(f"{flag} must be >= {low}, got {v}")
        return v

    return parse


class Parser(argparse.ArgumentParser):
    """The parser class of every (sub)command: defaults shown, the exit codes in the epilog, and
    counting flags (:data:`POSITIVE_INTS`, :data:`NON_NEGATIVE_INTS`) range-checked."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        kwargs.setdefault("epilog", EXIT_CODES)
        super().__init__(*args, **kwargs)

    def add_argument(self, *names: Any, **kwargs: Any) -> argparse.Action:
        if kwargs.get("type") is int:
            longs = [n for n in names if isinstance(n, str) and n.startswith("--")]
            dest = kwargs.get("dest") or (longs[0][2:].replace("-", "_") if longs else "")
            low = 1 if dest in POSITIVE_INTS else 0 if dest in NON_NEGATIVE_INTS else None
            if low is not None:
                kwargs["type"] = _checked_int(longs[0] if longs else names[0], low)
        return super().add_argument(*names, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    from agentsd import __version__

    parser = Parser(
        prog="agentsd",
        description="Skill-conditioned on-policy self-distillation for LLM agents.",
    )
    parser.add_argument("--version", action="version", version=f"agentsd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name, target in COMMANDS.items():
        mod, _, fn = target.partition(":")
        getattr(importlib.import_module(mod), fn)(sub)
        if name not in sub.choices:
            raise RuntimeError(f"{target} did not register the subcommand {name!r}")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    from agentsd.registry import RegistryError

    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SystemExit as e:
        if not isinstance(e.code, str):
            raise
        # commands raise SystemExit("message") for input they cannot use: a usage error
        print(f"agentsd {args.command}: error: {e.code}", file=sys.stderr)
        return 2
    except (RegistryError, ValueError, FileNotFoundError) as e:
        # user errors (bad id, bad config, missing file): the message says what to do
        if os.environ.get("AGENTSD_DEBUG"):
            raise
        print(f"agentsd {args.command}: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - a runtime failure: one line, exit 1
        if os.environ.get("AGENTSD_DEBUG"):
            raise
        print(f"agentsd {args.command}: failed: {type(e).__name__}: {e} (AGENTSD_DEBUG=1 shows the traceback)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
