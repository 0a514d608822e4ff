"""The one ``fetch_files`` reader of every backend (stdlib only, no agentsd import).

Three places read the files a caller asked back after a run: the local launcher (pid 1 of the
run's namespaces, a ``python -I -S`` script), the docker backend's in-container supervisor (a
``python -I -S -c`` source, in a container that has no agentsd) and weak mode (a plain temp dir).
None of the first two can import agentsd, so this module is loaded **by path**
(``_launcher.py``, :func:`agentsd.sandbox._pump._fetch_weak`) or its source is prepended to the
supervisor's (``docker_backend``). It must stay self-contained.

Rules, the same everywhere: a relative name is read under ``workdir``, an absolute one as it
stands (weak mode refuses absolute names: nothing isolates them there); only regular files, never
through a final symlink (``O_NOFOLLOW``), opened non-blocking (a FIFO cannot hang the reader);
missing or unreadable names are left out; all contents together are capped at ``budget`` bytes —
beyond it the result is ``{FETCH_ERROR: message}`` instead. Contents come back base64-encoded
(SandboxFusion's encoding). :func:`fetch_as` reads as the run's uid in a forked child, so a
symlink the program planted reaches nothing it could not read itself.
"""

import base64
import json
import os
import stat

#: the key that replaces every file when the contents pass the budget
FETCH_ERROR = "\x00error"


def fetch_files(names, workdir, budget, absolute=True):
    """``{name: base64}`` of the requested regular files, or ``{FETCH_ERROR: why}``."""
    out = {}
    for name in names or ():
        if name.startswith("/") and not absolute:
            continue
        path = name if name.startswith("/") else os.path.join(workdir, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
        except OSError:
            continue
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                continue
            data = f.read(budget + 1)
        if len(data) > budget:
            return {FETCH_ERROR: "the fetched files exceed the output limit"}
        budget -= len(data)
        out[name] = base64.b64encode(data).decode()
    return out


def fetch_as(uid, names, workdir, budget):
    """:func:`fetch_files` run by a child that dropped to ``uid`` (and no groups) first."""
    if not names:
        return {}
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            text = json.dumps(fetch_files(names, workdir, budget))
            with os.fdopen(w, "w") as f:
                f.write(text)
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        text = f.read()
    os.waitpid(pid, 0)
    return json.loads(text or "{}")

