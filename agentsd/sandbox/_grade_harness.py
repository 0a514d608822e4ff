"""The candidate side of out-of-process grading, and the value codec both sides share (stdlib
only: this file is sent into the sandbox as ``main.py``; the host imports it for the codec).

In the sandbox it reads one JSON line from stdin — ``{"code", "entry", "per_test_s",
"groups": [[call, ...], ...]}`` where a call is ``[args, kwargs]`` in the codec below — and runs
as two processes:

- the **harness** (this process; never runs candidate code) makes itself non-dumpable, so a
  process of the same uid can neither read its memory nor open its file descriptors through
  ``/proc``; it forks the **candidate** with fresh pipes for calls, replies and stdout (fd 2 is
  ``/dev/null``), so the candidate never holds the harness's real stdout;
- the candidate loads the code, answers ``["loaded"]`` or ``["load_error", message]``, then one
  outcome line per call the harness sends: ``["ok", value]``, ``["raise", type name,
  message]`` or ``["unserializable", why]``;
- the harness enforces each statement's ``per_test_s`` budget *from outside*: when it runs out
  (or the candidate dies, or sends something malformed or too large) it SIGKILLs the
  candidate's process group, marks the calls (``["timeout"]``, or ``["raise", ...]`` naming
  what happened) and forks a fresh candidate for the next statement. Code that ignores or
  blocks signals cannot escape the budget.

The harness then writes one JSON line, the only thing on the real stdout: ``{"protocol": 2,
"load_error", "results": [[row, ...], ...], "stdout": what the candidate printed (capped)}``.
The candidate can change only the outcomes it reports for its own calls; the host validates
the shape of everything and decides what the outcomes are worth.

The codec is JSON with tags: ``None``/bool/str/small ints/finite floats as themselves,
everything else as ``[tag, ...]`` (``list tuple set frozenset dict bytes int float complex``).
:func:`decode` builds only those built-in types, so no object of the candidate's (a rigged
``__eq__``, a lying ``__repr__``) ever reaches the host, and it is bounded: depth
(:data:`MAX_DEPTH`), items (:data:`MAX_ITEMS`), and no set or dict whose keys share a hash more
than :data:`MAX_EQUAL_HASHES` times (colliding keys would cost quadratic time to insert).
"""

import json
import math

MAX_DEPTH = 100
#: the most containers + elements one decoded value may have
MAX_ITEMS = 200_000
#: the most keys of one set/dict that may share a hash value (more is a collision attack)
MAX_EQUAL_HASHES = 32
PROTOCOL = 2
#: bytes of outcome rows one run may send back, and of the candidate's stdout kept
MAX_REPLY_BYTES = 768 * 1024
STDOUT_KEEP = 16 * 1024
_SMALL_INT = 1 << 53


def encode(x, depth=0):
    """A JSON-safe form of a plain value; ``TypeError`` for anything else."""
    if depth > MAX_DEPTH:
        raise TypeError(f"a value nested more than {MAX_DEPTH} deep")
    t = type(x)
    if x is None or t is bool:
        return x
    if isinstance(x, str):
        return str.__str__(x)
    if isinstance(x, int):
        v = int.__int__(x)
        return v if -_SMALL_INT < v < _SMALL_INT else ["int", hex(v)]
    if isinstance(x, float):
        v = float.__float__(x)
        return v if math.isfinite(v) else ["float", repr(v)]
    d = depth + 1
    if isinstance(x, list):
        return ["list", [encode(i, d) for i in list.__iter__(x)]]
    if isinstance(x, tuple):
        return ["tuple", [encode(i, d) for i in tuple.__iter__(x)]]
    if isinstance(x, dict):
        return ["dict", [[encode(k, d), encode(v, d)] for k, v in dict.items(x)]]
    if isinstance(x, frozenset):
        return ["frozenset", [encode(i, d) for i in frozenset.__iter__(x)]]
    if isinstance(x, set):
        return ["set", [encode(i, d) for i in set.__iter__(x)]]
    if isinstance(x, bytes | bytearray):
        return ["bytes", bytes(x).hex()]
    if isinstance(x, complex):
        return ["complex", encode(x.real, d), encode(x.imag, d)]
    raise TypeError(f"cannot pass a {t.__name__} between the grader and the candidate")


def decode(v, depth=0, _budget=None):
    """The plain value of an :func:`encode`\\ d form; ``ValueError`` for anything malformed,
    too deep, too large or hash-colliding (see the module docstring)."""
    budget = [MAX_ITEMS] if _budget is None else _budget
    budget[0] -= 1
    if budget[0] < 0:
        raise ValueError(f"value has more than {MAX_ITEMS} items")
    if depth > MAX_DEPTH:
        raise ValueError("value nested too deeply")
    t = type(v)
    if v is None or t is bool or t is str or t is float:
        return v
    if t is int:
        return v
    if t is not list or not v or type(v[0]) is not str:
        raise ValueError(f"malformed value {repr(v)[:80]!r}")
    tag, rest, d = v[0], v[1:], depth + 1
    if tag in ("list", "tuple", "set", "frozenset") and len(rest) == 1 and type(rest[0]) is list:
        items = [decode(i, d, budget) for i in rest[0]]
        if tag in ("set", "frozenset"):
            _check_hashes(items)
        return {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}[tag](items)
    if tag == "dict" and len(rest) == 1 and type(rest[0]) is list:
        pairs = []
        for pair in rest[0]:
            if type(pair) is not list or len(pair) != 2:
                raise ValueError("malformed dict item")
            pairs.append((decode(pair[0], d, budget), decode(pair[1], d, budget)))
        _check_hashes([k for k, _ in pairs])
        return dict(pairs)
    if tag == "int" and len(rest) == 1 and type(rest[0]) is str and len(rest[0]) <= 1 << 16:
        return int(rest[0], 16)
    if tag == "float" and len(rest) == 1 and rest[0] in ("nan", "inf", "-inf"):
        return float(rest[0])
    if tag == "bytes" and len(rest) == 1 and type(rest[0]) is str:
        return bytes.fromhex(rest[0])
    if tag == "complex" and len(rest) == 2:
        re_, im = decode(rest[0], d, budget), decode(rest[1], d, budget)
        if type(re_) is not float or type(im) is not float:
            raise ValueError("malformed complex")
        return complex(re_, im)
    raise ValueError(f"unknown tag {tag[:20]!r}")


def _check_hashes(keys):
    """``ValueError`` when ``keys`` are unhashable or too many share one hash value."""
    if len(keys) <= MAX_EQUAL_HASHES:
        return
    counts = {}
    try:
        for k in keys:
            h = hash(k)
            counts[h] = c = counts.get(h, 0) + 1
            if c > MAX_EQUAL_HASHES:
                raise ValueError(f"more than {MAX_EQUAL_HASHES} keys of one set or dict share a hash")
    except TypeError as e:
        raise ValueError(f"unhashable key: {e}") from None


def _describe(e):
    return f"{type(e).__name__}: {e}"[:300]


def valid_row(row):
    """Whether ``row`` has the shape of one call's outcome (its value is checked on decode)."""
    if type(row) is not list or not row or type(row[0]) is not str:
        return False
    kind = row[0]
    if kind == "ok":
        return len(row) == 2
    if kind == "raise":
        return len(row) == 3 and type(row[1]) is str and type(row[2]) is str
    if kind == "unserializable":
        return len(row) == 2 and type(row[1]) is str
    return kind == "timeout" and len(row) == 1


def _call(fn, args, kwargs):
    """One call's outcome row (in the candidate process)."""
    try:
        value = fn(*decode(args), **decode(kwargs))
    except BaseException as e:  # noqa: BLE001 - SystemExit too: a failed call
        return ["raise", type(e).__name__, str(e)[:300]]
    try:
        return ["ok", encode(value)]
    except TypeError as e:
        return ["unserializable", str(e)[:200]]
    except RecursionError:
        return ["unserializable", "a value nested too deeply"]


def _candidate(spec, call_fd, reply_fd):
    """The candidate process: load the code, then answer each call line (never returns)."""
    import os

    os.setpgid(0, 0)  # its own group: the harness kills the candidate and what it started
    reply = os.fdopen(reply_fd, "w", buffering=1)
    calls = os.fdopen(call_fd)
    ns = {"__name__": "__solution__"}
    try:
        exec(compile(spec["code"], "solution.py", "exec"), ns)
        first = ["loaded"] if spec["entry"] in ns else [
            "load_error", f"NameError: your code does not define {spec['entry']!r}"]
    except BaseException as e:  # noqa: BLE001 - sys.exit at import time too
        first = ["load_error", "while loading your code: " + _describe(e)]
    reply.write(json.dumps(first) + "\n")
    if first[0] == "loaded":
        fn = ns[spec["entry"]]
        for line in calls:
            args, kwargs = json.loads(line)
            reply.write(json.dumps(_call(fn, args, kwargs)) + "\n")
    reply.flush()


class _Harness:
    """The harness process: runs no candidate code; talks to a forked candidate over pipes."""

    def __init__(self, spec):
        self.spec, self.per = spec, float(spec["per_test_s"])
        self.pid = None
        self.stdout = bytearray()
        self.reply_budget = MAX_REPLY_BYTES
        self.reload_error = None

    def start(self):
        """Fork a fresh candidate and wait for it to load; returns the load error or None."""
        import os

        call_r, self.call_w = os.pipe()
        self.reply_r, reply_w = os.pipe()
        self.out_r, out_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                null = os.open("/dev/null", os.O_RDWR)
                for src, dst in ((null, 0), (out_w, 1), (null, 2)):
                    os.dup2(src, dst)
                lo = 3
                for fd in sorted((call_r, reply_w)):  # nothing of the harness's but its pipes
                    os.closerange(lo, fd)
                    lo = fd + 1
                os.closerange(lo, 65536)
                _dumpable(1)
                _candidate(self.spec, call_r, reply_w)
            finally:
                os._exit(0)
        self.pid = pid
        for fd in (call_r, reply_w, out_w):
            os.close(fd)
        for fd in (self.call_w, self.reply_r, self.out_r):
            os.set_blocking(fd, False)
        self.pending, self.buf = b"", bytearray()
        kind, row = self.exchange(b"", self._deadline())
        if kind == "timeout":
            return f"TimeoutError: loading your code took longer than {self.per:g}s"
        if kind != "row" or not isinstance(row, list) or not row:
            return "while loading your code: " + (_END.get(kind) or "it sent no load status")
        if row == ["loaded"]:
            return None
        if len(row) == 2 and row[0] == "load_error" and isinstance(row[1], str):
            return row[1][:500]
        return "while loading your code: it sent a malformed load status"

    def _deadline(self):
        import time

        return time.monotonic() + self.per

    def exchange(self, call, deadline):
        """Send ``call`` (bytes) and read one reply line by ``deadline``: ``("row", value)``,
        ``("timeout", None)``, ``("dead", None)``, ``("malformed", None)`` or
        ``("too_large", None)``. Drains the candidate's stdout meanwhile."""
        import os
        import select
        import time

        self.pending = call
        while True:
            nl = self.buf.find(b"\n")
            if nl >= 0:
                line, self.buf = bytes(self.buf[:nl]), self.buf[nl + 1:]
                self.reply_budget -= len(line)
                try:
                    return "row", json.loads(line)
                except (ValueError, RecursionError):
                    return "malformed", None
            if len(self.buf) > self.reply_budget:
                return "too_large", None
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout", None
            rd = [fd for fd in (self.reply_r, self.out_r) if fd is not None]
            wr = [self.call_w] if self.pending else []
            try:
                r, w, _ = select.select(rd, wr, [], left)
            except InterruptedError:
                continue
            if w:
                try:
                    self.pending = self.pending[os.write(self.call_w, self.pending):]
                except BlockingIOError:
                    pass
                except BrokenPipeError:
                    return "dead", None
            if self.out_r in r:
                chunk = os.read(self.out_r, 65536)
                if not chunk:
                    os.close(self.out_r)
                    self.out_r = None
                elif len(self.stdout) < STDOUT_KEEP:
                    self.stdout += chunk[:STDOUT_KEEP - len(self.stdout)]
            if self.reply_r in r:
                chunk = os.read(self.reply_r, 65536)
                if not chunk:
                    return "dead", None
                self.buf += chunk

    def kill(self):
        """SIGKILL the candidate's process group and reap the candidate."""
        import os
        import signal

        if self.pid is None:
            return
        for target in (lambda: os.killpg(self.pid, signal.SIGKILL), lambda: os.kill(self.pid, signal.SIGKILL)):
            try:
                target()
            except OSError:
                pass
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass
        for fd in (self.call_w, self.reply_r, self.out_r):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self.pid = self.out_r = None

    def group(self, calls):
        """The outcome rows of one statement's calls, within one ``per_test_s`` budget."""
        rows, deadline = [], self._deadline()
        if self.pid is None and self.reload_error is None:
            self.reload_error = self.start()
            if self.reload_error is not None:
                self.kill()
        if self.reload_error is not None:  # loading once more failed: no more tries
            return [["raise", "RuntimeError", "your code did not load again after an earlier "
                     "call was stopped: " + self.reload_error[:200]]] * len(calls)
        for call in calls:
            kind, row = self.exchange((json.dumps(call) + "\n").encode(), deadline)
            if kind == "row" and valid_row(row) and row[0] != "timeout":
                rows.append(row)
                continue
            self.kill()  # whatever it was doing: a fresh candidate for the next statement
            if kind == "timeout":
                break
            rows.append(["raise", "RuntimeError", _END.get(kind) or "it sent a malformed outcome"])
            rows += [["raise", "RuntimeError", "an earlier call of this test " + _END.get(kind, "failed")]
                     ] * (len(calls) - len(rows))
            return rows
        return rows + [["timeout"]] * (len(calls) - len(rows))


_END = {"dead": "your code ended its own process", "malformed": "it sent a malformed outcome",
        "too_large": f"its outcomes exceed {MAX_REPLY_BYTES // 1024} KiB"}


def _dumpable(flag):
    """prctl(PR_SET_DUMPABLE): a non-dumpable process's memory and fds are closed to its uid."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(4, flag, 0, 0, 0)
    except Exception:  # noqa: BLE001 - no ctypes: the isolation below the harness still holds
        pass


def main():
    import os
    import sys

    spec = json.loads(sys.stdin.buffer.readline())
    _dumpable(0)
    h = _Harness(spec)
    report = {"protocol": PROTOCOL, "load_error": None, "results": [], "stdout": ""}
    report["load_error"] = h.start()
    if report["load_error"] is None:
        report["results"] = [h.group(g) for g in spec["groups"]]
    h.kill()
    report["stdout"] = bytes(h.stdout).decode("utf-8", errors="replace")
    data = (json.dumps(report) + "\n").encode()
    while data:
        data = data[os.write(1, data):]


if __name__ == "__main__":
    main()
