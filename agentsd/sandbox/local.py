"""The ``local`` sandbox backend: untrusted code on a plain Linux machine, no Docker needed.

Each run is a fresh interpreter under ``_launcher.py`` as pid 1 of its own namespaces. By default a
long-lived root launcher (the *zygote*, one per :class:`LocalSandbox`) receives the run's fds over
a unix socket and forks; the child calls ``unshare(2)`` and forks pid 1 (``mode="spawn"`` instead
execs ``unshare`` and a fresh launcher per run). What **is** isolated (``isolation="namespaces"``,
the default; needs root):

- **network**: a new network namespace with no interfaces up — no loopback, no outside network;
- **filesystem**: a new mount namespace whose root is a size-capped tmpfs holding read-only binds
  of the system trees (:data:`SYSTEM_TREES`: ``/usr``, ``/bin``, ``/lib*``…) with every Python
  package directory in them covered by an empty tmpfs, and of the *runtime view*
  (:mod:`agentsd.sandbox.runtime`): the interpreter and its standard library at ``/opt/python``
  (``sys.prefix``), allow-listed ``packages`` only, and a synthetic ``/etc``. The host's
  interpreter prefix and its ``site-packages`` (data packages such as HumanEval's answer key),
  the project folder, run folders and the trajectory store, ``/root``, ``/home``, ``/work``,
  ``/tmp`` … are not there at all; writable are only ``/work`` (cwd), ``/tmp`` and ``/dev/shm``,
  all inside that tmpfs (``Limits.file_mb`` for their sum);
- **processes**: a new pid namespace (the program cannot see or signal host processes; when the
  run ends pid 1 exits and the kernel kills everything left, double-forked daemons included);
  IPC and UTS namespaces too;
- **identity**: a dedicated unprivileged uid/gid per concurrent slot (``uid_base + slot``, no
  supplementary groups), no-new-privileges, no capabilities, a clean environment, and a fresh,
  empty session keyring per run;
- **system calls**: a seccomp filter built by libseccomp (``pyseccomp``; :func:`seccomp_program`)
  denies with ``EPERM`` every kernel-keyring call (``keyctl``/``add_key``/``request_key`` — so a
  run cannot leave state for the next run of the same uid in the user keyring), new namespaces
  (``unshare``, ``setns``, namespace flags of ``clone``; ``clone3`` gets ``ENOSYS``), every
  mount call, ``ptrace`` and cross-process memory access, ``bpf``, ``perf_event_open``,
  ``userfaultfd``, ``io_uring``, module loading, ``kexec``, clock/host administration,
  ``AF_VSOCK`` sockets (``EAFNOSUPPORT``); foreign architectures (32-bit syscalls) are killed;
- **host information**: ``/proc`` is mounted with ``hidepid=2`` (pid 1, the root launcher, and
  its command line and environment are invisible); ``/dev`` holds fresh device nodes, not a bind
  of the host's devtmpfs; the run's root is assembled in a directory of its own
  (:data:`NEWROOT_DIR`), so an interpreter installed under ``/tmp`` or ``/work`` is neither
  hidden nor in the way (its view is copied or hard-linked into the runtime cache);
  ``/proc/self/mountinfo`` names only standard system paths and agentsd's runtime cache;
- **resources**: rlimits (CPU seconds, address space, file size, processes, open files, no core
  dumps) and, where cgroup v1/v2 controllers are writable, a memory and pids cgroup per slot of
  each instance (``agentsd-sandbox/i-<pid>-<random>/slot-N``; a setup failure fails that run and
  never switches cgroups off); wall clock and output size are enforced by this harness, which
  kills the namespace's pid 1 — and pid 1 kills everything itself a few seconds after the wall
  limit if the harness is gone (both modes).

What is **not** isolated: the kernel is shared (a kernel exploit escapes, as with Docker); CPU
time is limited per process but not shared fairly between slots; the read-only system trees are
visible (world-readable files under ``/usr``: tools, shared libraries, documentation — but no
Python package directory); the standard library's ``_sysconfigdata`` names the prefix the
interpreter was built for (a string: nothing is there); ``/proc/self/mountinfo`` shows the
filesystems' devices; ``/proc`` shows the machine's CPU/memory totals;
timing side channels are open; without ``pyseccomp``/libseccomp the backend refuses unless
``seccomp=False`` is passed (then no syscall filter).

Without root or namespaces the backend refuses (:class:`SandboxUnavailable`) unless the caller
passes ``isolation="weak"``: then runs are plain subprocesses in their own session with rlimits and
a private temp dir — **no network, filesystem or user isolation**.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

from agentsd.sandbox._fetch import FETCH_ERROR
from agentsd.sandbox._pump import (  # noqa: F401 - re-exported: the docker backend and tests use them
    _FILE_MARKERS,
    _IO,
    _MEM_MARKERS,
    _classify,
    _close,
    _fetch_weak,
    _finish,
    _kill_ns,
    _pump,
    _reap,
    _run_pipes,
)
from agentsd.sandbox._seccomp import DENIED_SYSCALLS, seccomp_program  # noqa: F401 - public here too
from agentsd.sandbox.runtime import SANDBOX_PREFIX, SANDBOX_PYTHON, Runtime, runtime_for
from agentsd.sandbox.types import ExecRequest, ExecResult, Limits, SandboxUnavailable, Status

__all__ = ["LocalSandbox", "probe", "LAUNCHER"]

LAUNCHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_launcher.py")
LOCK_DIR = "/run/agentsd-sandbox"
#: where each run's root is assembled (in its private mount namespace): a directory of its own,
#: so no interpreter prefix (under /tmp, /work, anywhere) can be hidden by it or collide with it
NEWROOT_DIR = LOCK_DIR + "/newroot"
CGROUP_ROOT = "/sys/fs/cgroup"
CGROUP_NAME = "agentsd-sandbox"
_ENV = {"PATH": "", "HOME": "/work", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1", "TMPDIR": "/tmp"}


@dataclass(frozen=True)
class Probe:
    """What this machine allows: ``ok`` and, if not, ``reason`` (a sentence with the fix)."""

    ok: bool
    reason: str = ""
    cgroups: str = "none"  # "v1", "v2" or "none"


def probe() -> Probe:
    """Check root, the ``unshare`` tool and Linux; cheap, no run."""
    if not sys.platform.startswith("linux"):
        return Probe(False, "the local sandbox needs Linux namespaces; use the docker or http backend")
    if os.geteuid() != 0:
        return Probe(False, "the local sandbox needs root to create namespaces and switch to "
                     "unprivileged uids; run as root, use the docker/http backend, or pass "
                     "isolation='weak' to accept no network/filesystem/user isolation")
    if shutil.which("unshare") is None:
        return Probe(False, "the 'unshare' tool (util-linux) is missing; install util-linux")
    return Probe(True, cgroups=_cgroup_kind())


def _cgroup_kind() -> str:
    if os.path.isdir(f"{CGROUP_ROOT}/memory") and os.path.isdir(f"{CGROUP_ROOT}/pids"):
        return "v1"
    if os.path.exists(f"{CGROUP_ROOT}/cgroup.controllers"):
        return "v2"
    return "none"


#: host system trees every run sees read-only (shared libraries, tools); their Python package
#: directories are covered (:func:`agentsd.sandbox.runtime.package_dirs`)
SYSTEM_TREES = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32")


def _binds(rt: Runtime) -> list[list[str]]:
    """``[host path, sandbox path]`` of every read-only bind: the system trees, the runtime view's
    interpreter at :data:`~agentsd.sandbox.runtime.SANDBOX_PREFIX` and its synthetic ``/etc``."""
    return [[p, p] for p in SYSTEM_TREES] + [[rt.python_dir, SANDBOX_PREFIX], [rt.etc_dir, "/etc"]]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


class _Slots:
    """Slot numbers 0..n-1, exclusive across threads *and* processes (flock on a lock file named
    by the slot's uid ``uid_base + slot``), so two harnesses on one machine — with the same or
    overlapping uid ranges — never run one uid at once."""

    def __init__(self, n: int, lock_dir: str, uid_base: int = 0) -> None:
        self.n, self.lock_dir, self.uid_base = n, lock_dir, uid_base
        self._cv = threading.Condition()
        self._free = list(range(n))

    @contextlib.contextmanager
    def acquire(self):
        with self._cv:
            while not self._free:
                self._cv.wait()
            cands = list(self._free)
            self._free.clear()
        held, fd = None, None
        try:
            while held is None:
                for s in cands:  # another process may hold some of them
                    path = os.path.join(self.lock_dir, f"uid-{self.uid_base + s}.lock")
                    f = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
                    try:
                        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        held, fd = s, f
                        break
                    except BlockingIOError:
                        os.close(f)
                if held is None:
                    time.sleep(0.01)
            with self._cv:  # give back the candidates we did not take
                self._free.extend(c for c in cands if c != held)
                self._cv.notify_all()
            yield held
        finally:
            if fd is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
            with self._cv:
                if held is not None:
                    self._free.append(held)
                else:
                    self._free.extend(c for c in cands if c not in self._free)
                self._cv.notify_all()


class LocalSandbox:
    """The embedded sandbox (see the module docstring for exactly what it isolates).

    ``slots`` bounds concurrent runs of this object (each slot has its own uid ``uid_base+slot``
    and cgroup); ``mode="zygote"`` (default) forks each run from one long-lived root launcher,
    ``mode="spawn"`` execs ``unshare`` and a fresh launcher per run (slower, no helper
    process); ``python`` is the host interpreter whose runtime view the sandbox runs (at
    ``/opt/python``, standard library only; see :mod:`agentsd.sandbox.runtime`);
    ``packages`` allow-lists installed distributions that view also holds (off by default:
    graded code sees no site-packages); ``seccomp=False`` drops the syscall filter
    (only for machines without libseccomp; the docstring of this module says what it denies).
    Each instance owns its cgroup directories (``agentsd-sandbox/i-<pid>-<random>/slot-N``), so
    instances in one or several processes never share or remove each other's.
    """

    name = "local"

    def __init__(self, slots: int | None = None, *, uid_base: int = 60000,
                 isolation: str = "namespaces", python: str | None = None,
                 use_cgroups: bool = True, mode: str = "zygote", seccomp: bool = True,
                 packages: tuple[str, ...] = ()) -> None:
        if isolation not in ("namespaces", "weak"):
            raise ValueError(f"isolation must be 'namespaces' or 'weak', got {isolation!r}")
        if mode not in ("zygote", "spawn"):
            raise ValueError(f"mode must be 'zygote' (fast, one long-lived root launcher) or "
                             f"'spawn' (unshare + a fresh launcher per run), got {mode!r}")
        self.mode = mode
        self._zlock = threading.Lock()
        self._zproc: subprocess.Popen | None = None
        self._zsock = None
        slots = slots or max(1, os.cpu_count() or 1)
        if not isinstance(slots, int) or not 1 <= slots <= 1024:
            raise ValueError(f"slots must be an int in [1, 1024], got {slots!r}")
        if not isinstance(uid_base, int) or not 1000 <= uid_base <= 2**31 - 2048:
            raise ValueError(f"uid_base must be an int >= 1000 (unprivileged), got {uid_base!r}")
        self.isolation, self.uid_base, self.slots = isolation, uid_base, slots
        self.python = python or os.path.realpath(sys.executable)
        if isinstance(packages, str) or not all(isinstance(p, str) for p in packages):
            raise ValueError(f"packages must be a sequence of distribution names, got {packages!r}")
        self.packages = tuple(packages)
        self.seccomp = bool(seccomp)
        self._cg_ready: set[int] = set()
        self.cgroup_error = ""
        self._cg_lock = threading.Lock()
        self._cg_instance = f"i-{os.getpid()}-{os.urandom(4).hex()}"
        self._closed = False
        if isolation == "namespaces":
            p = probe()
            if not p.ok:
                raise SandboxUnavailable(p.reason)
            self._bpf, self._keyctl = seccomp_program() if self.seccomp else (b"", None)
            os.makedirs(NEWROOT_DIR, mode=0o700, exist_ok=True)
            self._runtime = runtime_for(self.python, self.packages, uid_base)
            self._cgroups = self._make_instance_cgroups(p.cgroups) if use_cgroups else "none"
            lock_dir = LOCK_DIR
        else:
            self._cgroups = "none"
            lock_dir = tempfile.gettempdir()
        self._slots = _Slots(slots, lock_dir, uid_base)

    # -- public -------------------------------------------------------------------------------
    def run(self, request: ExecRequest) -> ExecResult:
        """Run one request; never raises for anything the code does."""
        if not isinstance(request, ExecRequest):
            raise TypeError(f"run() takes an ExecRequest, got {type(request).__name__}")
        if self._closed:
            raise RuntimeError("this LocalSandbox is closed")
        with self._slots.acquire() as slot:
            try:
                if self.isolation == "weak":
                    return self._run_weak(request)
                return self._run_ns(request, slot)
            except Exception as e:  # noqa: BLE001 - harness failure, not the code's
                return ExecResult(Status.SANDBOX_ERROR, detail=f"{type(e).__name__}: {e}",
                                  backend=self.name)

    def describe(self) -> dict:
        return {"backend": self.name, "isolation": self.isolation, "mode": self.mode, "slots": self.slots,
                "uid_base": self.uid_base, "cgroups": self._cgroups,
                "cgroup_error": self.cgroup_error}

    def close(self) -> None:
        """Stop the zygote and remove this object's cgroups (idempotent)."""
        self._closed = True
        with self._zlock:
            if self._zsock is not None:
                self._zsock.close()  # the zygote exits on EOF
                self._zsock = None
            if self._zproc is not None:
                try:
                    self._zproc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._zproc.kill()
                    self._zproc.wait()
                self._zproc = None
        for slot in list(self._cg_ready):
            for d in self._cgroup_dirs(slot):
                with contextlib.suppress(OSError):
                    os.rmdir(d)
        self._cg_ready.clear()
        for d in self._instance_dirs():
            with contextlib.suppress(OSError):
                os.rmdir(d)

    def __enter__(self) -> LocalSandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self):  # configuration travels, locks and cgroups do not
        return {"slots": self.slots, "uid_base": self.uid_base, "isolation": self.isolation,
                "python": self.python, "use_cgroups": self._cgroups != "none", "mode": self.mode,
                "seccomp": self.seccomp, "packages": self.packages}

    def __setstate__(self, state) -> None:
        self.__init__(**state)

    # -- cgroups ------------------------------------------------------------------------------
    def _instance_dirs(self, kind: str | None = None) -> list[str]:
        kind = kind or self._cgroups
        if kind == "v1":
            return [f"{CGROUP_ROOT}/{c}/{CGROUP_NAME}/{self._cg_instance}" for c in ("memory", "pids")]
        if kind == "v2":
            return [f"{CGROUP_ROOT}/{CGROUP_NAME}/{self._cg_instance}"]
        return []

    def _cgroup_dirs(self, slot: int) -> list[str]:
        return [f"{d}/slot-{slot}" for d in self._instance_dirs()]

    def _make_instance_cgroups(self, kind: str) -> str:
        """Create this instance's cgroup directories (and sweep those of dead processes); the
        kind that works, or ``"none"`` with ``cgroup_error`` saying why not."""
        if kind == "none":
            return "none"
        try:
            for d in self._instance_dirs(kind):
                os.makedirs(d)
                if kind == "v2":  # each level must hand the controllers down
                    for level in (os.path.dirname(d), d):
                        _write(f"{level}/cgroup.subtree_control", "+memory +pids")
        except OSError as e:
            self.cgroup_error = f"{type(e).__name__}: {e}"
            for d in self._instance_dirs(kind):
                with contextlib.suppress(OSError):
                    os.rmdir(d)
            return "none"
        for d in self._instance_dirs(kind):
            _sweep_stale(os.path.dirname(d))
        return kind

    def _prepare_cgroups(self, slot: int, limits: Limits) -> tuple[list[str], int]:
        """Create/limit the slot's cgroups; returns the dirs and the OOM-kill count before the
        run. A failure fails this run (``OSError`` → ``sandbox_error``); it never switches the
        limits off for later runs."""
        dirs = self._cgroup_dirs(slot)
        if not dirs:
            return [], 0
        mem = (limits.memory_mb + limits.file_mb + 64) * 1024 * 1024
        for d in dirs:
            os.makedirs(d, exist_ok=True)
        if self._cgroups == "v1":
            md, pd = dirs
            # memsw must stay >= the memory limit: raise it first, lower it last
            with contextlib.suppress(OSError):
                _write(f"{md}/memory.memsw.limit_in_bytes", str(mem))
            _write(f"{md}/memory.limit_in_bytes", str(mem))
            with contextlib.suppress(OSError):
                _write(f"{md}/memory.memsw.limit_in_bytes", str(mem))
            _write(f"{pd}/pids.max", str(limits.processes + 2))
        else:
            _write(f"{dirs[0]}/memory.max", str(mem))
            with contextlib.suppress(OSError):
                _write(f"{dirs[0]}/memory.swap.max", "0")
            _write(f"{dirs[0]}/pids.max", str(limits.processes + 2))
        self._cg_ready.add(slot)
        return dirs, self._oom_kills(dirs)

    def _oom_kills(self, dirs: list[str]) -> int:
        if not dirs:
            return 0
        path = f"{dirs[0]}/memory.oom_control" if self._cgroups == "v1" else f"{dirs[0]}/memory.events"
        try:
            with open(path) as f:
                for line in f:
                    k, _, v = line.partition(" ")
                    if k == "oom_kill":
                        return int(v)
        except OSError:
            pass
        return 0

    # -- the namespaced run ---------------------------------------------------------------------
    def _run_ns(self, req: ExecRequest, slot: int) -> ExecResult:
        lim = req.limits
        cg_dirs, oom_before = self._prepare_cgroups(slot, lim)
        rt = self._runtime
        cmd = req.argv(SANDBOX_PYTHON)
        cmd[0] = _resolve(cmd[0], rt.host_python)
        env = dict(_ENV, PATH=f"{SANDBOX_PREFIX}/bin:/usr/local/bin:/usr/bin:/bin", **rt.env)
        cfg = {
            "files": {k: v.hex() for k, v in req.all_files().items()},
            "argv": cmd, "env": env, "uid": self.uid_base + slot, "newroot": NEWROOT_DIR,
            "tmpfs_mb": lim.file_mb, "ro_binds": _binds(rt), "masks": list(rt.masks), "cgroups": cg_dirs,
            "wall_s": lim.wall_s, "seccomp_bpf": self._bpf.hex(), "keyctl_nr": self._keyctl,
            "fetch_files": list(req.fetch_files),
            "limits": {"cpu": lim.cpu_seconds, "memory_mb": lim.memory_mb, "file_mb": lim.file_mb,
                       "open_files": lim.open_files, "processes": lim.processes,
                       "output_kb": lim.output_kb},
        }
        cfg_fd = os.memfd_create("agentsd-sandbox-cfg", 0)  # no temp file, no pipe deadlock
        try:
            os.write(cfg_fd, json.dumps(cfg).encode())
            os.lseek(cfg_fd, 0, os.SEEK_SET)
            if self.mode == "zygote":
                io = self._via_zygote(cfg_fd, req, lim)
            else:
                io = self._via_unshare(cfg_fd, req, lim)
        finally:
            os.close(cfg_fd)
        res = _classify(io, lim, self._oom_kills(cg_dirs) > oom_before)
        res.backend = self.name
        return res

    def _via_unshare(self, cfg_fd: int, req: ExecRequest, lim: Limits) -> _IO:
        """Spawn mode: ``unshare`` + a fresh launcher interpreter per run."""
        (status_r, status_w), (in_r, in_w), (out_r, out_w), (err_r, err_w) = _run_pipes()
        argv = ["unshare", "--fork", "--pid", "--net", "--mount", "--ipc", "--uts",
                "--kill-child", sys.executable, "-I", "-S", LAUNCHER, str(cfg_fd), str(status_w)]
        t0 = time.monotonic()
        try:
            proc = subprocess.Popen(argv, stdin=in_r, stdout=out_w, stderr=err_w,
                                    pass_fds=(cfg_fd, status_w), env={"PATH": "/usr/bin:/bin"},
                                    start_new_session=True)
        except BaseException:
            _close(status_r, in_w, out_r, err_r)  # our ends: the run never started
            raise
        finally:
            _close(status_w, in_r, out_w, err_w)  # the run's ends: the child holds its own copies

        def kill(_status: bytes) -> bool:
            _kill_ns(proc)
            return True

        return _pump(in_w, out_r, err_r, status_r, req.stdin_bytes(), lim, t0, kill,
                     finish=lambda: _reap(proc))

    def _via_zygote(self, cfg_fd: int, req: ExecRequest, lim: Limits) -> _IO:
        """Zygote mode: hand the run's fds to the long-lived root launcher, which forks."""
        import socket

        (status_r, status_w), (in_r, in_w), (out_r, out_w), (err_r, err_w) = _run_pipes()
        t0 = time.monotonic()
        try:
            with self._zlock:
                sock = self._zygote()
                socket.send_fds(sock, [b"run"], [cfg_fd, in_r, out_w, err_w, status_w])
        except BaseException:
            _close(status_r, in_w, out_r, err_r)  # our ends: the run never started
            raise
        finally:
            _close(status_w, in_r, out_w, err_w)  # the run's ends: the child holds its own copies

        def kill(status: bytes) -> bool:
            for line in status.splitlines():
                with contextlib.suppress(ValueError):
                    pid = json.loads(line).get("pid")
                    if isinstance(pid, int) and pid > 1:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(pid, signal.SIGKILL)  # pid 1 of the run's namespace
                        return True
            return False  # its pid has not arrived yet: try again on the next chunk

        return _pump(in_w, out_r, err_r, status_r, req.stdin_bytes(), lim, t0, kill)

    def _zygote(self):
        """The live zygote's socket, (re)starting it when needed (caller holds ``_zlock``)."""
        import socket

        if self._zproc is not None and self._zproc.poll() is None:
            return self._zsock
        if self._zsock is not None:
            self._zsock.close()
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._zproc = subprocess.Popen(
                [sys.executable, "-I", "-S", LAUNCHER, "--zygote", str(child.fileno())],
                pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, env={"PATH": "/usr/bin:/bin"}, start_new_session=True)
        finally:
            child.close()
        self._zsock = parent
        return parent

    # -- weak isolation (explicit opt-in) -------------------------------------------------------
    def _run_weak(self, req: ExecRequest) -> ExecResult:
        lim = req.limits
        with tempfile.TemporaryDirectory(prefix="agentsd-weak-") as work:
            for rel, data in req.all_files().items():
                path = os.path.join(work, rel)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as f:
                    f.write(data)
            cmd = req.argv(self.python)

            def limit() -> None:
                import resource

                mb = 1024 * 1024
                resource.setrlimit(resource.RLIMIT_CPU, (lim.cpu_seconds, lim.cpu_seconds + 1))
                resource.setrlimit(resource.RLIMIT_AS, (lim.memory_mb * mb,) * 2)
                resource.setrlimit(resource.RLIMIT_FSIZE, (lim.file_mb * mb,) * 2)
                resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

            in_r, in_w = os.pipe()
            out_r, out_w = os.pipe()
            err_r, err_w = os.pipe()
            t0 = time.monotonic()
            try:
                proc = subprocess.Popen(cmd, cwd=work, stdin=in_r, stdout=out_w, stderr=err_w,
                                        env=dict(_ENV, HOME=work, TMPDIR=work, PATH="/usr/bin:/bin"),
                                        start_new_session=True, preexec_fn=limit)
            except BaseException:
                for fd in (in_w, out_r, err_r):
                    os.close(fd)
                raise
            finally:
                for fd in (in_r, out_w, err_w):
                    os.close(fd)

            def kill(_status: bytes = b"") -> bool:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                return True

            io = _pump(in_w, out_r, err_r, None, req.stdin_bytes(), lim, t0, kill,
                       finish=lambda: _reap(proc))
            kill()  # leftovers of the session; setsid'd grandchildren can escape weak mode
            fetched = _fetch_weak(work, req.fetch_files, lim.output_kb * 1024)
        res = _classify(io, lim, False)
        files_error = fetched.pop(FETCH_ERROR, "")
        res.files = fetched
        if files_error and res.status is Status.OK:
            res.status, res.detail = Status.OUTPUT_LIMIT, files_error
        res.backend = self.name + "-weak"
        return res


def _sweep_stale(parent: str) -> None:
    """Remove the (empty) cgroup directories of instances whose process is gone."""
    with contextlib.suppress(OSError):
        for name in os.listdir(parent):
            parts = name.split("-")
            if len(parts) == 3 and parts[0] == "i" and parts[1].isdigit() and not _pid_alive(int(parts[1])):
                inst = os.path.join(parent, name)
                with contextlib.suppress(OSError):
                    for slot in os.listdir(inst):
                        if slot.startswith("slot-"):
                            os.rmdir(os.path.join(inst, slot))
                    os.rmdir(inst)


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _resolve(prog: str, host_python: str) -> str:
    """The sandbox path of ``prog``: the runtime view's interpreter for ``python``/``python3``
    (or the host interpreter's own path), else what the system trees' PATH finds."""
    if prog in ("python", "python3", SANDBOX_PYTHON, SANDBOX_PREFIX + "/bin/python"):
        return SANDBOX_PYTHON
    if os.path.isabs(prog):
        return SANDBOX_PYTHON if os.path.realpath(prog) == host_python else prog
    found = shutil.which(prog, path="/usr/local/bin:/usr/bin:/bin")
    if found is None:
        raise FileNotFoundError(f"program {prog!r} not found on the sandbox PATH")
    return found
