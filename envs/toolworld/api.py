"""The one source of truth for ToolWorld's app APIs: typed definitions, dispatch, docs, schemas.

Every app function is declared once with :func:`api` (its app, typed parameters, description and
what it returns). From that single declaration come the OpenAI tool schema
(:meth:`Api.tool`, an :class:`agentsd.tools.Tool`), the text the ``api_docs`` tool shows, argument
validation and the authentication check. :func:`call_api` runs a call against a world and always
returns a :class:`CallResult` (errors included); it never raises.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agentsd.tools import Tool, validate_arguments

__all__ = ["Param", "Api", "AppError", "CallResult", "APIS", "APPS", "api", "call_api",
           "paginate", "api_docs", "tool_name", "MAX_STRING_CHARS", "MAX_ARRAY_ITEMS"]

#: string arguments longer than this are rejected (a real API caps request bodies too)
MAX_STRING_CHARS = 5000
#: array arguments with more elements than this are rejected
MAX_ARRAY_ITEMS = 100

_REQUIRED = object()


class AppError(Exception):
    """An error an app returns to the caller. ``kind`` is one of ``not_found``,
    ``permission_denied``, ``insufficient_funds``, ``invalid_argument``, ``conflict``."""

    KINDS = ("not_found", "permission_denied", "insufficient_funds", "invalid_argument", "conflict")

    def __init__(self, kind: str, message: str) -> None:
        assert kind in self.KINDS, kind
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class Param:
    """One typed parameter. ``type`` is a JSON-schema type; ``items`` the element type of an
    array; ``default`` makes it optional."""

    name: str
    type: str
    description: str
    default: Any = _REQUIRED
    items: str | None = None
    enum: tuple[Any, ...] | None = None

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED

    def schema(self) -> dict[str, Any]:
        """The JSON schema of this parameter; :func:`call_api` checks arguments against it (with
        :func:`agentsd.tools.validate_arguments`), so the published schema is the whole rule."""
        out: dict[str, Any] = {"type": self.type, "description": self.description}
        out.update(_caps(self.type))
        if self.items:
            out["items"] = {"type": self.items, **_caps(self.items)}
            out["maxItems"] = MAX_ARRAY_ITEMS
        if self.enum:
            out["enum"] = list(self.enum)
        if not self.required:
            out["default"] = self.default
        return out

    def signature(self) -> str:
        typ = f"array[{self.items}]" if self.items else self.type
        return f"{self.name}: {typ}" + ("" if self.required else f" = {self.default!r}")


@dataclass(frozen=True)
class Api:
    """One app function. ``auth`` APIs take an ``access_token`` from the app's ``login``."""

    app: str
    name: str
    description: str
    params: tuple[Param, ...]
    returns: str
    fn: Callable[..., Any] = field(repr=False, compare=False)
    auth: bool = False
    mutates: bool = False

    @property
    def tool_name(self) -> str:
        return tool_name(self.app, self.name)

    @functools.cached_property
    def _all_params(self) -> tuple[Param, ...]:
        token = Param("access_token", "string", f"the token returned by {self.app}__login")
        return ((token,) if self.auth else ()) + self.params

    def all_params(self) -> tuple[Param, ...]:
        """The parameters the caller passes (``access_token`` first for auth APIs)."""
        return self._all_params

    def tool(self) -> Tool:
        """This API as an :class:`agentsd.tools.Tool` (hence an OpenAI schema)."""
        return self._tool

    @functools.cached_property
    def _tool(self) -> Tool:
        return Tool(self.tool_name, f"[{self.app}] {self.description}",
                    {p.name: p.schema() for p in self.all_params()},
                    required=tuple(p.name for p in self.all_params() if p.required))

    def signature(self) -> str:
        return f"{self.tool_name}({', '.join(p.signature() for p in self.all_params())})"

    def doc(self) -> str:
        lines = [self.signature(), f"  {self.description}"]
        for p in self.all_params():
            opt = "required" if p.required else f"optional, default {p.default!r}"
            enum = f"; one of {list(p.enum)}" if p.enum else ""
            lines.append(f"  - {p.name} ({p.items and f'array of {p.items}' or p.type}, {opt}{enum}): "
                         f"{p.description}")
        lines.append(f"  Returns: {self.returns}")
        if self.auth:
            lines.append(f"  Needs login: call {self.app}__login first and pass its access_token.")
        return "\n".join(lines)


def tool_name(app: str, name: str) -> str:
    """The tool name of an app API (OpenAI names allow no dots, hence the double underscore)."""
    return f"{app}__{name}"


#: every API by tool name, in declaration order
APIS: dict[str, Api] = {}
#: app name -> one-line description
APPS: dict[str, str] = {}


def api(app: str, description: str, returns: str, *params: Param, auth: bool = False,
        mutates: bool = False, name: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Declare an app function (named ``name``, default the function's name). The decorated
    function takes ``(world, **arguments)``."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        a = Api(app, name or fn.__name__, description, tuple(params), returns, fn, auth, mutates)
        if a.tool_name in APIS:
            raise ValueError(f"API {a.tool_name} declared twice")
        APIS[a.tool_name] = a
        return fn

    return wrap


@dataclass
class CallResult:
    """What one API call returned: ``value`` on success, ``error`` (kind, message) otherwise."""

    ok: bool
    value: Any = None
    error_kind: str | None = None
    error: str | None = None

    def payload(self) -> dict[str, Any]:
        """The JSON the agent sees."""
        if self.ok:
            return {"result": self.value}
        return {"error": {"type": self.error_kind, "message": self.error}}


def _caps(typ: str) -> dict[str, Any]:
    return {"maxLength": MAX_STRING_CHARS} if typ == "string" else {}


def call_api(world: Any, name: str, args: Any) -> CallResult:
    """Run one API call against ``world``. Never raises: unknown names, bad arguments, missing
    tokens and app errors all come back as an error :class:`CallResult`."""
    a = APIS.get(name) if isinstance(name, str) else None
    if a is None:
        return CallResult(False, error_kind="not_found",
                          error=f"no API named {str(name)[:80]!r}; call api_docs() to list the apps")
    args, problem = validate_arguments(a.tool(), args)
    if problem:
        return CallResult(False, error_kind="invalid_argument", error=problem)
    kwargs = {p.name: args.get(p.name, p.default) for p in a.params}
    try:
        if a.auth:
            world.require_token(a.app, args["access_token"])
        value = a.fn(world, **kwargs)
    except AppError as e:
        return CallResult(False, error_kind=e.kind, error=e.message)
    return CallResult(True, value=value)


def paginate(items: list[Any], page: int, page_size: int) -> dict[str, Any]:
    """One page of ``items`` (pages count from 1), with the totals a caller needs to loop."""
    if page < 1:
        raise AppError("invalid_argument", f"page must be >= 1, got {page}")
    total_pages = max(1, math.ceil(len(items) / page_size))
    start = (page - 1) * page_size
    return {"results": items[start:start + page_size], "page": page, "total_pages": total_pages,
            "total_results": len(items)}


def api_docs(app: str = "", api_name: str = "") -> tuple[bool, str]:
    """The text of the ``api_docs`` tool: the app list, one app's APIs, or one API's full doc.
    Returns ``(ok, text)``."""
    app, api_name = app.strip().lower(), api_name.strip()
    if "__" in api_name and not app:
        app, _, api_name = api_name.partition("__")
    if not app:
        lines = ["Apps (call api_docs(app=NAME) to list an app's APIs):"]
        lines += [f"- {n}: {d}" for n, d in APPS.items()]
        lines.append("- api_docs / complete_task: this documentation and finishing the task")
        return True, "\n".join(lines)
    if app not in APPS:
        return False, f"no app named {app[:60]!r}; apps: {', '.join(APPS)}"
    apis = [a for a in APIS.values() if a.app == app]
    if not api_name:
        lines = [f"APIs of {app} (call api_docs(app={app!r}, api=NAME) for parameters):"]
        lines += [f"- {a.tool_name}: {a.description}" for a in apis]
        return True, "\n".join(lines)
    name = api_name.removeprefix(f"{app}__")
    for a in apis:
        if a.name == name:
            return True, a.doc()
    return False, (f"{app} has no API named {api_name[:60]!r}; its APIs: "
                   + ", ".join(a.name for a in apis))
