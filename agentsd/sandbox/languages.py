"""Languages beyond Python, through the same isolation: one table, one two-stage runner.

    >>> from agentsd.sandbox.languages import LANGUAGES
    >>> LANGUAGES["cpp"].compile
    ('g++', '-std=c++17', '-O2', 'main.cpp', '-o', 'main')
    >>> LANGUAGES["bash"].run
    ('/bin/bash', 'main.sh')

Every language is an ordinary :class:`~agentsd.sandbox.types.ExecRequest` on the same backend
(the ``local`` runtime view: read-only system trees with every Python package directory
covered, the standard-library-only interpreter at ``/opt/python``, nothing of the project), so a
language adds no way out. A compiled language runs twice: the compile stage (its own wall limit,
``compile_timeout``) returns the binary as a fetched file, and the run stage gets it back as an
input file. ``pytest`` runs on a second backend whose view allow-lists pytest and what it
requires (:func:`closure`) — plain ``python`` never sees them.

A language is *available* when its toolchain is on the sandbox's PATH inside the system trees
(:func:`host_support`) **and** a tiny program runs through the sandbox (:func:`probe`); a
toolchain that cannot run inside the view is reported unavailable, never given a wider view.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import threading
from dataclasses import dataclass, field, replace
from typing import Any

from agentsd.sandbox.types import ExecRequest, ExecResult, Limits, Status

__all__ = ["Language", "LANGUAGES", "Job", "Stages", "Catalog", "run_job", "host_support", "probe", "closure"]

log = logging.getLogger("agentsd.sandbox.languages")

#: where the sandbox looks up a language's programs (``/usr`` and ``/bin`` are bound read-only)
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin"
#: host trees the local runtime view binds (a toolchain elsewhere is not visible inside)
VISIBLE_TREES = ("/usr/", "/bin/", "/sbin/", "/lib/", "/lib64/")
_RUN_BINARY = ("/bin/sh", "-c", 'chmod 700 main && exec ./main "$@"', "main")


@dataclass(frozen=True)
class Language:
    """How one ``language`` runs: the request's code becomes ``source``; ``compile`` (argv or
    ``None``) produces ``binary``; ``run`` is the argv (the request's ``args`` follow it;
    ``None`` means the default ``python main.py``). ``programs`` must be on the sandbox PATH,
    ``packages`` (Python distributions, with what they require) in its view.
    ``min_memory_mb`` is address space the runtime reserves before running anything (V8
    reserves ~700 MiB): the run gets at least that much (capped at the service's maximum).
    ``probe`` is a program that must pass and print ``expect``."""

    name: str
    source: str
    run: tuple[str, ...] | None
    compile: tuple[str, ...] | None = None
    programs: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()
    min_memory_mb: int = 0
    probe: str = ""
    expect: str = "ok"


_PYTHON = Language("python", "main.py", None, probe="print('ok')")
LANGUAGES: dict[str, Language] = {
    "python": _PYTHON,
    "python3": replace(_PYTHON, name="python3"),
    "pytest": Language("pytest", "test_main.py", ("python", "-E", "-s", "-S", "-m", "pytest", "test_main.py"),
                       packages=("pytest",), probe="def test_ok():\n    assert True\n", expect="1 passed"),
    "bash": Language("bash", "main.sh", ("/bin/bash", "main.sh"), programs=("bash",), probe="echo ok"),
    "cpp": Language("cpp", "main.cpp", _RUN_BINARY, ("g++", "-std=c++17", "-O2", "main.cpp", "-o", "main"),
                    programs=("g++", "sh"),
                    probe='#include <iostream>\nint main() { std::cout << "ok" << std::endl; }\n'),
    "c": Language("c", "main.c", _RUN_BINARY, ("gcc", "-std=c11", "-O2", "main.c", "-o", "main", "-lm"),
                  programs=("gcc", "sh"), probe='#include <stdio.h>\nint main(void) { puts("ok"); }\n'),
    "nodejs": Language("nodejs", "main.js", ("node", "main.js"), programs=("node",), min_memory_mb=1024,
                       probe="console.log('ok')"),
}


@dataclass(frozen=True)
class Job:
    """One request in language-neutral terms (what the service validated)."""

    language: Language
    code: str
    files: dict[str, bytes] = field(default_factory=dict)
    stdin: str = ""
    args: tuple[str, ...] = ()
    cmd: tuple[str, ...] | None = None  # the agentsd extension: replaces the run stage's argv
    fetch_files: tuple[str, ...] = ()
    limits: Limits = Limits()
    compile_limits: Limits | None = None  # None: no compile stage


@dataclass
class Stages:
    """What ran: the compile stage's result (compiled languages) and the run stage's (absent
    when the compile failed or the sandbox failed before)."""

    compile: ExecResult | None = None
    run: ExecResult | None = None

    @property
    def last(self) -> ExecResult:
        return self.run if self.run is not None else self.compile  # type: ignore[return-value]


def requests_for(job: Job) -> tuple[ExecRequest | None, ExecRequest]:
    """The compile request (or ``None``) and the run request *without* the compiled binary
    (raises ``ValueError``/``TypeError`` for a malformed job, as :class:`ExecRequest` does)."""
    lang = job.language
    if lang.run is None:  # python: the default command, exactly as ExecRequest(code=...) runs
        return None, ExecRequest(code=job.code, files=dict(job.files), cmd=job.cmd, stdin=job.stdin,
                                 limits=job.limits, args=job.args,
                                 fetch_files=job.fetch_files)
    if lang.source in job.files:
        raise ValueError(f"files: {lang.source!r} is where the {lang.name} code goes; rename that file")
    files = {**job.files, lang.source: job.code.encode()}
    comp = None
    if lang.compile is not None:
        comp = ExecRequest(files=files, cmd=lang.compile, limits=job.compile_limits or job.limits,
                           fetch_files=("main",))
    run = ExecRequest(files=files, cmd=job.cmd or (*lang.run, *job.args), stdin=job.stdin,
                      limits=job.limits, fetch_files=job.fetch_files)
    return comp, run


def run_job(job: Job, backend) -> Stages:
    """Compile (when the language compiles) and run ``job`` on ``backend``."""
    import base64

    comp, run = requests_for(job)
    stages = Stages()
    if comp is not None:
        stages.compile = backend.run(comp)
        if not stages.compile.ok or "main" not in stages.compile.files:
            if stages.compile.ok:  # compiled "successfully" without a binary
                stages.compile.status = Status.SANDBOX_ERROR
                stages.compile.detail = "the compiler wrote no binary"
            return stages
        binary = base64.b64decode(stages.compile.files.pop("main"))
        run = replace(run, files={**run.files, "main": binary})
    stages.run = backend.run(run)
    return stages


def host_support(lang: Language) -> str:
    """Why ``lang`` cannot run on this machine, judged from the host (``""``: it may — the
    :func:`probe` decides). Programs must resolve inside the trees the runtime view binds."""
    for prog in lang.programs:
        found = shutil.which(prog, path=SANDBOX_PATH)
        if found is None:
            return f"{prog!r} is not installed (looked in {SANDBOX_PATH})"
        real = os.path.realpath(found)
        if not real.startswith(VISIBLE_TREES):
            return f"{prog!r} resolves to {real}, outside the trees the sandbox binds"
    try:
        closure(lang.packages)
    except LookupError as e:
        return str(e)
    return ""


def probe(lang: Language, backend, limits: Limits) -> str:
    """Run ``lang``'s probe program through ``backend``: ``""`` when it passed, else why not."""
    try:
        job = Job(lang, lang.probe, limits=limits, compile_limits=limits if lang.compile else None)
        stages = run_job(job, backend)
    except Exception as e:  # noqa: BLE001 - any failure means "not available here"
        return f"{type(e).__name__}: {e}"
    res = stages.last
    if res.ok and lang.expect in res.stdout:
        return ""
    stage = "compiling" if stages.run is None else "running"
    why = res.detail or (res.stderr.strip().splitlines() or [""])[-1][:200] or f"exit code {res.exit_code}"
    return f"{stage} a probe program inside the sandbox failed ({res.status.value}: {why})"


class Catalog:
    """The languages this service runs and the backends that run them: ``backend`` for plain
    code, and one per package allow-list (``pytest``), built lazily from ``backend``'s own
    settings (``__getstate__``) with ``packages=``. A language is checked once: its toolchain on
    the host (:func:`~agentsd.sandbox.languages.host_support`), then a probe program through the
    sandbox; the verdict is remembered."""

    def __init__(self, backend: Any, probe_limits: Limits) -> None:
        self.backend, self.probe_limits = backend, probe_limits
        self._backends: dict[tuple[str, ...], Any] = {(): backend}
        self._verdict: dict[str, str] = {"python": "", "python3": ""}  # name -> "" (ok) or why not
        self._host = {name: host_support(lang) for name, lang in LANGUAGES.items()}
        self._lock = threading.Lock()

    def backend_for(self, lang: Language) -> Any:
        packages = closure(lang.packages) if lang.packages else ()
        with self._lock:
            if packages not in self._backends:
                state = getattr(self.backend, "__getstate__", lambda: None)()
                if not isinstance(state, dict) or "packages" not in state:
                    raise RuntimeError(f"the {getattr(self.backend, 'name', '?')} backend cannot hold "
                                       f"Python packages ({', '.join(packages)})")
                self._backends[packages] = type(self.backend)(**{**state, "packages": packages})
            return self._backends[packages]

    def why_not(self, name: str) -> str:
        """``""`` when ``name`` is known and not (yet) found wanting, else why it cannot run."""
        if name not in LANGUAGES:
            return "unknown"
        return self._host[name] or self._verdict.get(name, "")

    def check(self, name: str) -> str:
        """Probe ``name`` through the sandbox unless done (blocking; a worker thread calls it)."""
        if name not in self._verdict and not self.why_not(name):
            lang = LANGUAGES[name]
            try:
                why = probe(lang, self.backend_for(lang), self.probe_limits.replace(
                    memory_mb=max(self.probe_limits.memory_mb, lang.min_memory_mb)))
            except Exception as e:  # noqa: BLE001 - e.g. the allow-listed view cannot be built
                why = f"{type(e).__name__}: {e}"
            if why:
                log.warning("language %s is unavailable here: %s", name, why)
            self._verdict[name] = why
        return self.why_not(name)

    def available(self) -> list[str]:
        return [n for n in LANGUAGES if not self.why_not(n)]

    def describe(self) -> dict[str, str]:
        return {n: self.why_not(n) or ("ok" if n in self._verdict else "not yet probed") for n in LANGUAGES}

    def close(self) -> None:
        for packages, b in list(self._backends.items()):
            if packages:
                with contextlib.suppress(Exception):
                    b.close()


def closure(names: tuple[str, ...]) -> tuple[str, ...]:
    """``names`` and every distribution they require (markers evaluated for this interpreter),
    sorted; ``LookupError`` naming what is not installed."""
    from importlib import metadata

    seen: dict[str, None] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise LookupError(f"the Python package {name!r} is not installed (pip install {name})") from None
        seen[key] = None
        for req in dist.requires or ():
            todo.extend(_required(req))
    return tuple(sorted(seen))


def _required(spec: str) -> list[str]:
    """The distribution a ``Requires-Dist`` line needs here ([] for extras or other platforms)."""
    from packaging.requirements import Requirement

    req = Requirement(spec)
    if req.marker is not None and not req.marker.evaluate({"extra": ""}):
        return []
    return [req.name]
