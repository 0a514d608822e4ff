"""The ``agentsd`` command line.

Each subcommand lives next to the code it drives and is listed in :data:`COMMANDS` as
``"name": "module:register"``; ``register(subparsers)`` adds the subparser and sets ``func``.
Modules are imported only when their command is listed or run, so ``agentsd --help`` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

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
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agentsd",
        description="Skill-conditioned on-policy self-distillation for LLM agents.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
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
    except (RegistryError, ValueError, FileNotFoundError) as e:
        # user errors (bad id, bad config, missing file): the message says what to do;
        # AGENTSD_DEBUG=1 shows the traceback
        if os.environ.get("AGENTSD_DEBUG"):
            raise
        print(f"agentsd {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
