"""The env registry: versioned ids, lazy entry points, third-party plugins.

Ids look like ``[namespace/]Name-vN``. Envs register by string entry point
(``"agentsd.envs.sokoban:SokobanEnv"``) so nothing heavy is imported until :func:`make`::

    >>> import agentsd
    >>> env = agentsd.make("Sokoban-v0", seed=3)
    >>> obs, info = env.reset()

Specs are gymnasium ``EnvSpec`` objects with agentsd's extras (splits, tags), and every id is also
in gymnasium's registry under the ``agentsd/`` namespace, so gymnasium's own tools work::

    >>> import gymnasium as gym
    >>> gym.register_envs(agentsd)  # a no-op that keeps linters from dropping the import
    >>> env = gym.make("agentsd/Sokoban-Easy-v0")

Third-party packages expose a function or module under the entry-point group ``agentsd.envs``
(``[project.entry-points."agentsd.envs"] mypkg = "mypkg.envs:register_all"``); the group is
loaded on the first registry miss. ``make("mypkg.envs:Foo-v0")`` imports ``mypkg.envs`` first.
A plugin's ids reach gymnasium's registry when the plugin registers them (after
:func:`list_envs` or a miss has loaded the group, or when ``mypkg.envs`` is imported).

``agentsd.registry`` is this module; :func:`list_envs` (also ``agentsd.list_envs()``) returns every
registered spec by id. Calling the module itself, ``agentsd.registry()``, still returns the same
dict but is deprecated.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import re
import sys
import types
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import gymnasium

__all__ = [
    "EnvSpec", "Split", "register", "make", "spec", "list_envs", "pprint_registry",
    "RegistryError", "UnknownEnvError", "DuplicateEnvError", "EntryPointError",
    "split_seeds", "gymnasium_id", "GymnasiumEntryPoint", "ENTRY_POINT_GROUP", "GYMNASIUM_NAMESPACE",
]

ENTRY_POINT_GROUP = "agentsd.envs"
#: the package that registers the built-in suite (the repository's envs/ folder, installed under agentsd)
BUILTINS_MODULE = "agentsd.envs"
#: every agentsd id is also in gymnasium's registry under this namespace (see :func:`gymnasium_id`)
GYMNASIUM_NAMESPACE = "agentsd"
_ID_RE = re.compile(r"^(?:(?P<namespace>[\w.\-]+)/)?(?P<name>[\w.\-]+?)-v(?P<version>\d+)$")


class RegistryError(Exception):
    """Base class of registry errors."""


class UnknownEnvError(RegistryError, KeyError):
    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class DuplicateEnvError(RegistryError):
    pass


class EntryPointError(RegistryError, ImportError):
    pass


@dataclass(frozen=True)
class Split:
    """A named slice of an env's task space: the seeds that belong to it (``[start, stop)``)
    and kwargs that select it (for example held-out task templates). Splits of one env never
    share seeds (checked at registration)."""

    seeds: tuple[int, int]
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        lo, hi = self.seeds
        if not (isinstance(lo, int) and isinstance(hi, int) and 0 <= lo < hi):
            raise ValueError(f"Split.seeds must be (start, stop) with 0 <= start < stop, got {self.seeds}")

    def seed_list(self, n: int, offset: int = 0) -> list[int]:
        lo, hi = self.seeds
        if offset + n > hi - lo:
            raise ValueError(f"split has {hi - lo} seeds; asked for {n} from offset {offset}")
        return list(range(lo + offset, lo + offset + n))


@dataclass
class EnvSpec(gymnasium.envs.registration.EnvSpec):
    """Everything needed to build an env from its id: gymnasium's ``EnvSpec`` (so gymnasium's
    checker, wrappers and ``gymnasium.make`` accept it) plus agentsd's extras, ``tags``, named
    ``splits`` and a one-line ``description``. The turn limit is gymnasium's ``max_episode_steps``
    (also readable as :attr:`max_turns`)."""

    tags: tuple[str, ...] = ()
    splits: Mapping[str, Split] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not _ID_RE.match(self.id):
            raise RegistryError(
                f"malformed env id {self.id!r}: expected '[namespace/]Name-vN', e.g. 'Sokoban-v0'"
            )
        super().__post_init__()  # namespace, name, version
        if isinstance(self.entry_point, str) and ":" not in self.entry_point:
            raise RegistryError(
                f"entry point {self.entry_point!r} of {self.id} must look like 'module:Attr'"
            )
        steps = self.max_episode_steps
        if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool) or steps < 1):
            raise RegistryError(f"max_turns of {self.id} must be a positive int, got {steps!r}")
        ranges = sorted((s.seeds, name) for name, s in self.splits.items())
        for (a, na), (b, nb) in zip(ranges, ranges[1:]):
            if b[0] < a[1]:
                raise RegistryError(f"splits {na!r} and {nb!r} of {self.id} share seeds {b[0]}..")

    @property
    def max_turns(self) -> int | None:
        """The turn limit (gymnasium's ``max_episode_steps``)."""
        return self.max_episode_steps

    def load(self) -> Callable[..., Any]:
        """Import and return the env constructor."""
        return _load_entry_point(self.entry_point, self.id)

    def make(self, seed: int | None = None, split: str | None = None, **kwargs: Any):
        """Build the env with kwargs merged over the spec's (see :func:`make`)."""
        from agentsd.wrappers import OrderEnforcing, TurnLimit

        merged = dict(self.kwargs)
        if split is not None:
            if split not in self.splits:
                raise RegistryError(
                    f"env {self.id} has no split {split!r}; it has: {sorted(self.splits) or 'none'}"
                )
            merged.update(self.splits[split].kwargs)
        max_turns = kwargs.pop("max_turns", self.max_turns)
        merged.update(kwargs)
        env = self.load()(**merged)
        env_spec = dataclasses.replace(self, kwargs=merged, max_episode_steps=max_turns)
        base = getattr(env, "unwrapped", env)
        base.spec = env_spec  # type: ignore[attr-defined]
        if seed is not None:
            base._pending_seed = int(seed)
        if max_turns is not None:
            env = TurnLimit(env, max_turns)
        return OrderEnforcing(env)  # outermost, so it sees turn-limit truncation too


def _load_entry_point(entry_point: str | Callable[..., Any], env_id: str) -> Callable[..., Any]:
    """The constructor an entry point names (``"module:Attr"``), imported now; callables as is."""
    if callable(entry_point):
        return entry_point
    mod_name, _, attr = entry_point.partition(":")
    try:
        module = importlib.import_module(mod_name)
    except Exception as e:  # noqa: BLE001 - report any import failure with its cause
        raise EntryPointError(
            f"cannot import module {mod_name!r} for env {env_id}: {type(e).__name__}: {e}"
        ) from e
    try:
        obj: Any = module
        for part in attr.split("."):
            obj = getattr(obj, part)
    except AttributeError as e:
        raise EntryPointError(
            f"module {mod_name!r} has no attribute {attr!r} (entry point of env {env_id})"
        ) from e
    return obj


@dataclass(frozen=True)
class GymnasiumEntryPoint:
    """The entry point of an agentsd id in gymnasium's registry: builds the env from agentsd's
    entry point and takes agentsd's ``max_turns=`` keyword, so
    ``gymnasium.make("agentsd/Sokoban-v0", max_turns=3)`` truncates after 3 turns as
    ``agentsd.make("Sokoban-v0", max_turns=3)`` does.

    gymnasium applies the registered limit (``max_episode_steps``) itself, outside this env, so
    through ``gymnasium.make`` ``max_turns`` can only lower it; a higher one is refused with the
    fix (gymnasium's own ``max_episode_steps=N``). Picklable, so async vector envs can ship it."""

    id: str
    entry_point: str | Callable[..., Any]
    max_turns: int | None = None

    def __call__(self, **kwargs: Any):
        from agentsd.wrappers import TurnLimit

        max_turns = kwargs.pop("max_turns", None)
        if max_turns is not None and self.max_turns is not None and max_turns > self.max_turns:
            raise ValueError(
                f"gymnasium.make applies {self.id}'s registered limit of {self.max_turns} turns itself; "
                f"for {max_turns} turns pass max_episode_steps={max_turns} instead of max_turns "
                f"(agentsd.make({self.id!r}, max_turns={max_turns}) takes either)")
        env = _load_entry_point(self.entry_point, self.id)(**kwargs)
        return env if max_turns is None else TurnLimit(env, max_turns)

    @property
    def metadata(self) -> dict[str, Any]:
        """The env class's metadata (gymnasium.make reads its render modes from the entry point)."""
        return dict(getattr(_load_entry_point(self.entry_point, self.id), "metadata", {}) or {})


_REGISTRY: dict[str, EnvSpec] = {}
_PLUGINS_LOADED = False
_BUILTINS_LOADED = False


def register(
    id: str,
    entry_point: str | Callable[..., Any],
    *,
    kwargs: Mapping[str, Any] | None = None,
    max_turns: int | None = None,
    tags: tuple[str, ...] | list[str] = (),
    splits: Mapping[str, Split] | None = None,
    description: str = "",
    on_duplicate: str = "warn",
) -> EnvSpec:
    """Register an env. ``on_duplicate`` is ``"warn"`` (replace, with a warning), ``"raise"``
    or ``"ignore"`` (keep the existing spec silently)."""
    if on_duplicate not in ("warn", "raise", "ignore"):
        raise ValueError(f"on_duplicate must be 'warn', 'raise' or 'ignore', got {on_duplicate!r}")
    new = EnvSpec(id=id, entry_point=entry_point, kwargs=dict(kwargs or {}), max_episode_steps=max_turns,
                  tags=tuple(tags), splits=dict(splits or {}), description=description)
    if id in _REGISTRY:
        if on_duplicate == "raise":
            raise DuplicateEnvError(f"env {id!r} is already registered (entry point "
                                    f"{_REGISTRY[id].entry_point!r}); pass on_duplicate='warn' to replace it")
        if on_duplicate == "ignore":
            return _REGISTRY[id]
        warnings.warn(f"overriding the already registered env {id!r}", stacklevel=2)
    _REGISTRY[id] = new
    gid = gymnasium_id(id)
    gymnasium.envs.registration.registry[gid] = dataclasses.replace(
        new, id=gid, entry_point=GymnasiumEntryPoint(id, entry_point, max_turns))
    return new


def gymnasium_id(id: str) -> str:
    """The id of an agentsd env in gymnasium's registry: ``Sokoban-v0`` -> ``agentsd/Sokoban-v0``;
    a namespaced ``tp/Thing-v0`` -> ``agentsd/tp.Thing-v0`` (gymnasium ids have one namespace)."""
    return f"{GYMNASIUM_NAMESPACE}/{id.replace('/', '.')}"


def _load_builtins() -> None:
    """Register the built-in suite once. A failed import raises (and is retried next time) rather
    than leaving the registry silently empty."""
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    try:
        importlib.import_module(BUILTINS_MODULE)
    except Exception as e:  # noqa: BLE001 - report any import failure with its cause
        raise EntryPointError(
            f"cannot register the built-in envs: importing {BUILTINS_MODULE} failed "
            f"({type(e).__name__}: {e}); is agentsd installed (pip install -e . in a checkout)?"
        ) from e
    _BUILTINS_LOADED = True


def _load_plugins() -> None:
    global _PLUGINS_LOADED
    if _PLUGINS_LOADED:
        return
    _PLUGINS_LOADED = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as e:  # noqa: BLE001
            warnings.warn(f"agentsd.envs plugin {ep.name!r} ({ep.value}) failed to load: "
                          f"{type(e).__name__}: {e}", stacklevel=3)
            continue
        if callable(obj):
            obj()


def list_envs() -> dict[str, EnvSpec]:
    """All registered specs by id (built-ins and plugins loaded), as a new dict."""
    _load_builtins()
    _load_plugins()
    return dict(_REGISTRY)


#: the name this function had before ``agentsd.registry`` became this module
registry = list_envs


def spec(id: str) -> EnvSpec:
    """The spec of ``id`` (``"module:Name-vN"`` imports ``module`` first)."""
    _load_builtins()
    if ":" in id:
        mod, _, id = id.partition(":")
        try:
            importlib.import_module(mod)
        except Exception as e:  # noqa: BLE001
            raise EntryPointError(f"cannot import module {mod!r} named in env id: "
                                  f"{type(e).__name__}: {e}") from e
    if id not in _REGISTRY:
        _load_plugins()
    if id in _REGISTRY:
        return _REGISTRY[id]
    if id.startswith(f"{GYMNASIUM_NAMESPACE}/"):  # gymnasium's name of an agentsd env
        for s in _REGISTRY.values():
            if gymnasium_id(s.id) == id:
                return s
    raise UnknownEnvError(_unknown_message(id))


def _unknown_message(id: str) -> str:
    m = _ID_RE.match(id)
    if m:
        base = (f"{m['namespace']}/" if m["namespace"] else "") + m["name"]
        versions = sorted(s.version for s in _REGISTRY.values()
                          if (f"{s.namespace}/" if s.namespace else "") + s.name == base)
        if versions:
            return (f"env {id!r} has no version v{m['version']}; registered versions: "
                    + ", ".join(f"{base}-v{v}" for v in versions))
    close = _close_matches(id, list(_REGISTRY))
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return f"unknown env id {id!r}.{hint} See agentsd.pprint_registry() for all ids."


#: how alike (difflib ratio of the lower-cased names without "-vN") a registered id must be to be
#: offered for an unknown one: "Sokobn" -> "Sokoban" is 0.92, "Nope" -> "Code-Gen" 0.33
CLOSE_MATCH_CUTOFF = 0.75


def _close_matches(id: str, ids: list[str], n: int = 3) -> list[str]:
    """Registered ids that look like a typo of ``id``: similar names (the shared ``-vN`` suffix
    does not count), or names that start with what was typed (``Code`` -> ``Code-Gen-v0``)."""
    def base(i: str) -> str:
        return re.sub(r"-v\d+$", "", i).lower()

    want = base(id)
    scored = []
    for cand in ids:
        ratio = difflib.SequenceMatcher(None, want, base(cand)).ratio()
        if ratio >= CLOSE_MATCH_CUTOFF or (len(want) >= 4 and base(cand).startswith(want)):
            scored.append((-ratio, cand))
    return [c for _, c in sorted(scored)[:n]]


def make(id: str, seed: int | None = None, split: str | None = None, **kwargs: Any):
    """Build a registered env, wrapped in order enforcing and its turn limit.

    ``kwargs`` override the spec's kwargs (``max_turns=`` overrides the turn limit); ``split``
    selects a named split's kwargs; ``seed`` applies to the first ``reset()`` that passes none.
    """
    return spec(id).make(seed=seed, split=split, **kwargs)


def split_seeds(id: str, split: str, n: int, offset: int = 0) -> list[int]:
    """``n`` seeds of a named split of ``id``."""
    s = spec(id)
    if split not in s.splits:
        raise RegistryError(f"env {id} has no split {split!r}; it has: {sorted(s.splits) or 'none'}")
    return s.splits[split].seed_list(n, offset)


def pprint_registry(file: Any = None) -> str:
    """Print (and return) a table of registered envs."""
    rows = [(s.id, ",".join(s.tags), str(s.max_turns or "-"), ",".join(s.splits),
             s.description) for s in list_envs().values()]
    rows.sort()
    heads = ("id", "tags", "max_turns", "splits", "description")
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(heads)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(heads, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    text = "\n".join(lines)
    print(text, file=file)
    return text


class _CallableModule(types.ModuleType):
    """``agentsd.registry`` is this module; calling it is the old ``agentsd.registry()``."""

    def __call__(self) -> dict[str, EnvSpec]:
        warnings.warn("agentsd.registry() is deprecated: agentsd.registry is the registry module; "
                      "call agentsd.list_envs() for every spec by id", DeprecationWarning, stacklevel=2)
        return list_envs()


sys.modules[__name__].__class__ = _CallableModule
