"""Command-line flags for the trainer config, derived from its dataclasses by tyro.

Every leaf field of :class:`~agentsd.distill.config.TrainConfig` is a ``--section.field`` flag
(nested dataclasses joined with dots, underscores written as hyphens): ``--algo``,
``--model.init-from``, ``--teacher.context.views``. A field added to a config dataclass is a flag
with no further code; its ``--help`` line is the field's ``help`` metadata (or its ``#:``
comment) and its default::

    >>> cfg, _ = parse_config(["--loss.kind", "jsd", "--loss.alpha", "0.5", "--resume", "false"])
    >>> cfg.loss.kind, cfg.loss.alpha, cfg.resume
    ('jsd', 0.5, False)

Values read as they always have: a bool takes ``true/false`` (also ``1/0``, ``yes/no``,
``on/off``; the bare flag means true), a tuple takes ``a,b`` (or ``a b``; nothing for an empty
one). ``--config FILE`` (JSON or YAML, part of a config) replaces the defaults and the flags
given next to it override the file. tyro parses the flags but does not build the config: it
hands over plain values and :func:`~agentsd.distill.config.config_from_dict` builds and
validates them, so a bad value raises the config's own ``ValueError`` with the flag appended.
tyro itself exits with status 2 on a malformed flag or value (``--loss.alpha abc``).
"""

from __future__ import annotations

import dataclasses
import functools
import re
import typing
from collections.abc import Sequence
from typing import Annotated, Any

__all__ = ["parse_config", "config_flags", "flag_name"]

_BOOL_WORDS = {"1": True, "true": True, "yes": True, "on": True,
               "0": False, "false": False, "no": False, "off": False}


def _parse_bool(words: list[str]) -> bool:
    if not words:  # the bare flag
        return True
    if len(words) > 1 or words[0].lower() not in _BOOL_WORDS:
        raise ValueError(f"expected true or false, got {' '.join(words)!r}")
    return _BOOL_WORDS[words[0].lower()]


def _split_items(words: list[str]) -> tuple[str, ...]:
    return tuple(x for w in words for x in w.split(",") if x)


def _field_help(cls: type, f: dataclasses.Field) -> Any:
    """The field's ``help`` metadata, else (lazily) its docstring or ``#:`` comment; either with
    the field's declared bounds appended (``(>= 1)``, :func:`~agentsd.distill.config_fields._f`)."""
    from agentsd.distill.config_fields import help_with_range

    text = f.metadata.get("help") if f.metadata else None
    return help_with_range(text, f) if text else functools.partial(_comment_help, cls, f)


def _comment_help(cls: type, f: dataclasses.Field) -> str | None:
    from agentsd.distill.config_fields import help_with_range

    try:  # tyro's reader of field comments is not public API; without it the flag has no help
        from tyro._docstrings import get_field_docstring

        return help_with_range(get_field_docstring(cls, f.name, ()), f)
    except Exception:  # noqa: BLE001
        return None


def _field_default(f: dataclasses.Field, parent: Any) -> Any:
    from tyro.constructors import MISSING_NONPROP

    if dataclasses.is_dataclass(parent) and not isinstance(parent, type):
        return getattr(parent, f.name)
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return MISSING_NONPROP


@functools.cache
def _registry() -> Any:
    """tyro rules: dataclasses parse into plain dicts (validation is ours), bools take a value,
    tuples take comma-separated items."""
    from tyro.constructors import (
        ConstructorRegistry,
        PrimitiveConstructorSpec,
        StructConstructorSpec,
        StructFieldSpec,
    )

    reg = ConstructorRegistry()

    @reg.struct_rule
    def _dataclass_as_dict(info: Any) -> Any:
        if not (dataclasses.is_dataclass(info.type) and isinstance(info.type, type)):
            return None
        hints = typing.get_type_hints(info.type, include_extras=True)
        fields = tuple(StructFieldSpec(name=f.name, type=hints[f.name],
                                       default=_field_default(f, info.default),
                                       helptext=_field_help(info.type, f))
                       for f in dataclasses.fields(info.type) if f.init)
        return StructConstructorSpec(instantiate=lambda **kw: kw, fields=fields)

    @reg.primitive_rule
    def _bool(info: Any) -> Any:
        if info.type is not bool:
            return None
        return PrimitiveConstructorSpec(
            nargs="*", metavar="BOOL", instance_from_str=_parse_bool,
            is_instance=lambda x: isinstance(x, bool),
            str_from_instance=lambda x: [str(x).lower()])

    @reg.primitive_rule
    def _str_tuple(info: Any) -> Any:
        if typing.get_origin(info.type) is not tuple or typing.get_args(info.type) != (str, ...):
            return None
        return PrimitiveConstructorSpec(
            nargs="*", metavar="A,B,...", instance_from_str=_split_items,
            is_instance=lambda x: isinstance(x, tuple),
            str_from_instance=lambda x: [",".join(x)])

    return reg


def _pre_parse_config_file(argv: Sequence[str]) -> str:
    """The value of ``--config`` (or ``--config=``) in ``argv``, '' when absent."""
    path = ""
    for i, a in enumerate(argv):
        if a == "--config" and i + 1 < len(argv):
            path = argv[i + 1]
        elif a.startswith("--config="):
            path = a.partition("=")[2]
    return path


def parse_config(argv: Sequence[str] | None = None, cls: type | None = None, *,
                 default: Any = None, extras: Any = None, prog: str | None = None,
                 description: str | None = None) -> tuple[Any, Any]:
    """``(config, extra_options)`` from command-line flags.

    ``cls`` (default :class:`TrainConfig`) gives one flag per leaf field; ``default`` (an
    instance) replaces the shown and used defaults; ``--config FILE`` replaces them in turn
    (missing fields keep ``default``); flags override both. ``extras`` is a dataclass of
    command options that are not part of the config (``--threads``), or an instance of one
    giving their defaults; its parsed instance comes back second (``None`` without it).
    ``--help`` and malformed flags exit through tyro (status 0 and 2); a value the config
    rejects raises its ``ValueError``, naming the field and the flag.
    """
    import sys

    import tyro

    from agentsd.distill.config import TrainConfig, config_from_dict, config_to_dict, read_config_file

    cls = cls or TrainConfig
    argv = list(sys.argv[1:] if argv is None else argv)
    base = default if default is not None else cls()
    config_file = _pre_parse_config_file(argv)
    if config_file:  # read before tyro runs, so the file's values are the flags' defaults
        data = read_config_file(config_file)
        base = _with_flag(lambda: config_from_dict(cls, _merge(config_to_dict(base), data)), cls)
    file_help = "JSON/YAML file with (part of) the config; flags override it"
    spec: list[Any] = [
        ("config", Annotated[str, tyro.conf.arg(metavar="FILE")],
         dataclasses.field(default="", metadata={"help": file_help})),
        ("cfg", Annotated[cls, tyro.conf.arg(name="")], dataclasses.field(default=base))]
    extras_default = extras() if isinstance(extras, type) else extras
    if extras_default is not None:
        spec.append(("extras", Annotated[type(extras_default), tyro.conf.arg(name="")],
                     dataclasses.field(default=extras_default)))
    parsed = tyro.cli(dataclasses.make_dataclass("Flags", spec, frozen=True), args=argv, prog=prog,
                      description=description, registry=_registry(),
                      config=(tyro.conf.FlagConversionOff,))
    cfg = _with_flag(lambda: config_from_dict(cls, parsed["cfg"]), cls)
    if extras_default is None:
        return cfg, None
    return cfg, type(extras_default)(**parsed["extras"])


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _leaves(cls: type, prefix: str = "") -> list[str]:
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        if dataclasses.is_dataclass(t):
            out += _leaves(t, f"{prefix}{f.name}.")
        else:
            out.append(prefix + f.name)
    return out


def flag_name(path: str) -> str:
    """``loss.top_k`` -> ``--loss.top-k``."""
    return "--" + path.replace("_", "-")


def config_flags(cls: type | None = None) -> list[str]:
    """Every flag :func:`parse_config` gives ``cls`` (default :class:`TrainConfig`), in field
    order, ``--config`` excluded."""
    from agentsd.distill.config import TrainConfig

    return [flag_name(p) for p in _leaves(cls or TrainConfig)]


def _owners(cls: type, prefix: str = "") -> dict[str, str]:
    """Dotted flag prefix of each dataclass under ``cls`` by class name (first one wins)."""
    out = {cls.__name__: prefix}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        if dataclasses.is_dataclass(t):
            out = {**_owners(t, f"{prefix}{f.name}."), **out}
    return out


def _with_flag(build: Any, cls: type) -> Any:
    """``build()``, with the flag appended to a ``ValueError`` that names a config field
    (``LossConfig.alpha must be ...`` -> ``... (flag --loss.alpha)``)."""
    try:
        return build()
    except TypeError as e:  # a value of the wrong type in a config file (e.g. a string for a number)
        raise ValueError(f"bad config value: {e}") from e
    except ValueError as e:
        msg = str(e)
        owners = _owners(cls)
        leaves = set(_leaves(cls))
        for m in re.finditer(r"(?<![\w.])(\w+)\.([a-z_][\w.]*)", msg):
            owner, path = m.group(1), m.group(2).rstrip(".")
            if owner in owners and owners[owner] + path in leaves:
                raise ValueError(f"{msg} (flag {flag_name(owners[owner] + path)})") from e
        raise
