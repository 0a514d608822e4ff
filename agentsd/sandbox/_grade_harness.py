"""The candidate side of out-of-process grading, and the value codec both sides share (stdlib
only: this file is sent into the sandbox as ``main.py``; the host imports it for the codec).

In the sandbox it reads one JSON line from stdin — ``{"code", "entry", "per_test_s", "nonce",
"groups": [[call, ...], ...]}`` where a call is ``[args, kwargs]`` in the codec below — loads the
candidate's code, calls the entry point once per call (each group, one test statement, shares a
``per_test_s`` budget) and prints ``nonce + JSON`` with one outcome per call:
``["ok", value]``, ``["raise", type name, message]``, ``["timeout"]`` or
``["unserializable", type name]``. It never sees a test, an expected value or the grader; the
candidate can rewrite anything in this process, which only changes the outputs it reports — the
host decides what they are worth.

The codec is JSON with tags: ``None``/bool/str/small ints/finite floats as themselves,
everything else as ``[tag, ...]`` (``list tuple set frozenset dict bytes int float complex``).
:func:`decode` builds only those built-in types, so no object of the candidate's (a rigged
``__eq__``, a lying ``__repr__``) ever reaches the host.
"""

import json
import math

MAX_DEPTH = 100
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


def decode(v, depth=0):
    """The plain value of an :func:`encode`\\ d form; ``ValueError`` for anything malformed."""
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
        items = [decode(i, d) for i in rest[0]]
        return {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}[tag](items)
    if tag == "dict" and len(rest) == 1 and type(rest[0]) is list:
        out = {}
        for pair in rest[0]:
            if type(pair) is not list or len(pair) != 2:
                raise ValueError("malformed dict item")
            out[decode(pair[0], d)] = decode(pair[1], d)
        return out
    if tag == "int" and len(rest) == 1 and type(rest[0]) is str:
        return int(rest[0], 16)
    if tag == "float" and len(rest) == 1 and rest[0] in ("nan", "inf", "-inf"):
        return float(rest[0])
    if tag == "bytes" and len(rest) == 1 and type(rest[0]) is str:
        return bytes.fromhex(rest[0])
    if tag == "complex" and len(rest) == 2:
        re_, im = decode(rest[0], d), decode(rest[1], d)
        if type(re_) is not float or type(im) is not float:
            raise ValueError("malformed complex")
        return complex(re_, im)
    raise ValueError(f"unknown tag {tag[:20]!r}")


def _describe(e):
    return f"{type(e).__name__}: {e}"[:300]


def _call(fn, args, kwargs, budget):
    """One call's outcome row (a budget expiry propagates: the caller marks the rest)."""
    try:
        value = fn(*decode(args), **decode(kwargs))
    except budget:
        raise
    except BaseException as e:  # noqa: BLE001 - SystemExit too: a failed call
        return ["raise", type(e).__name__, str(e)[:300]]
    try:
        return ["ok", encode(value)]
    except TypeError as e:
        return ["unserializable", str(e)[:200]]
    except RecursionError:
        return ["unserializable", "a value nested too deeply"]


def main():
    import signal
    import sys

    spec = json.loads(sys.stdin.readline())
    out = sys.stdout
    nonce, per = spec["nonce"], float(spec["per_test_s"])

    class _Budget(BaseException):  # not an Exception: `except Exception` in the code cannot eat it
        pass

    def expire(signum, frame):
        raise _Budget()

    signal.signal(signal.SIGALRM, expire)
    ns = {"__name__": "__solution__"}
    report = {"load_error": None, "results": []}
    try:
        signal.setitimer(signal.ITIMER_REAL, per)
        exec(compile(spec["code"], "solution.py", "exec"), ns)
        signal.setitimer(signal.ITIMER_REAL, 0)
        if spec["entry"] not in ns:
            report["load_error"] = f"NameError: your code does not define {spec['entry']!r}"
    except _Budget:
        report["load_error"] = f"TimeoutError: loading your code took longer than {per:g}s"
    except BaseException as e:  # noqa: BLE001 - sys.exit at import time too
        signal.setitimer(signal.ITIMER_REAL, 0)
        report["load_error"] = "while loading your code: " + _describe(e)
    fn = ns.get(spec["entry"])
    if report["load_error"] is None:
        for group in spec["groups"]:
            rows = []
            try:
                signal.setitimer(signal.ITIMER_REAL, per)
                for args, kwargs in group:
                    rows.append(_call(fn, args, kwargs, _Budget))
            except _Budget:  # the statement's budget ran out: this call and the rest time out
                pass
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            rows += [["timeout"]] * (len(group) - len(rows))
            report["results"].append(rows)
    sys.stdout = sys.__stdout__ = out
    out.write("\n" + nonce + json.dumps(report) + "\n")
    out.flush()


if __name__ == "__main__":
    main()
