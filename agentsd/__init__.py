"""agentsd: skill-conditioned on-policy self-distillation for LLM agents.

The env registry API lives at the top level::

    import agentsd
    agentsd.pprint_registry()          # a table of every id; agentsd.list_envs(): the specs by id
    env = agentsd.make("Sokoban-v0", seed=0)
    obs, info = env.reset()
    obs, reward, terminated, truncated, info = env.step("<answer>Up Left</answer>")

Every id is also registered with gymnasium under the ``agentsd/`` namespace
(``gymnasium.make("agentsd/Sokoban-Easy-v0")``). Everything heavy (torch, transformers, docker) is
imported inside the functions that need it, so ``import agentsd`` stays fast.

``agentsd.registry`` is the registry module (``agentsd.registry.EnvSpec``, ``agentsd.registry.make``).
"""

from agentsd import registry  # the module; importing its names below must not shadow it
from agentsd.checker import EnvCheckError, check_env
from agentsd.env import TextEnv
from agentsd.registry import (
    EnvSpec,
    Split,
    _load_builtins,
    list_envs,
    make,
    pprint_registry,
    register,
    spec,
    split_seeds,
)
from agentsd.tools import ParsedAction, Tool, ToolCall, parse_action
from agentsd.types import ParseStatus, Privileged, StopReason

# registering the built-in ids is cheap (string entry points) and puts them in gymnasium's registry
# too, so `import agentsd; gymnasium.make("agentsd/Sokoban-v0")` works
_load_builtins()

__version__ = "0.1.0"

__all__ = [
    "EnvCheckError", "EnvSpec", "ParseStatus", "ParsedAction", "Privileged", "Split",
    "StopReason", "TextEnv", "Tool", "ToolCall", "check_env", "list_envs", "make", "parse_action",
    "pprint_registry", "register", "registry", "spec", "split_seeds", "__version__",
]
