"""The in-namespace launcher of the ``local`` sandbox (stdlib only; run as ``python -I -S``).

``local.py`` starts it as ``unshare --fork --pid --net --mount --ipc --uts --kill-child python
-I -S _launcher.py CONFIG_FD STATUS_FD``, so this process is pid 1 of fresh pid, network, mount,
IPC and UTS namespaces and still root. It:

1. reads its JSON config (files, argv, limits, uid, cgroup dirs) from ``CONFIG_FD``;
2. joins the slot's cgroups (memory, pids) when the harness prepared them;
3. builds a new root on a size-capped tmpfs: read-only binds of the system trees and of the
   runtime view (:mod:`agentsd.sandbox.runtime`: the interpreter at ``/opt/python``, a synthetic
   ``/etc``), an empty read-only tmpfs over every Python package directory in those trees, a
   fresh ``/proc`` of the new pid namespace, a minimal ``/dev``, writable ``/tmp`` ``/work``
   ``/dev/shm`` (all inside the one capped tmpfs), then ``pivot_root`` and detach the old root;
4. forks the program: rlimits, no groups, the slot's unprivileged uid/gid, no-new-privileges,
   ``/work`` as cwd, a clean environment, ``exec``;
5. as pid 1, reaps everything until the program exits, SIGKILLs whatever it left, reaps that,
   and reports exit status and CPU seconds on ``STATUS_FD`` as one JSON line. Its own exit then
   tears the pid namespace down, so nothing can outlive the run.

Any failure before ``exec`` is reported as ``{"error": ...}`` (a sandbox error, not the code's).

The fast path (``--zygote SOCK_FD``, the default of ``local.py``) skips the per-run ``unshare``
exec and interpreter start-up: one long-lived root process receives each run's fds over a unix
socket and forks; the child calls ``unshare(2)`` itself and forks pid 1, which runs the same steps
1-5 (see :func:`zygote` and :func:`one_run`).
"""

import ctypes
import errno
import json
import os
import resource
import signal
import stat
import sys

MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 32, 4096, 16384, 1 << 18
MNT_DETACH = 2
SYS_PIVOT_ROOT = 155  # x86_64
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
KEYCTL_JOIN_SESSION_KEYRING = 1
NEWROOT = "/tmp"  # the default when the config names none (the mount is private to the namespace)
BACKSTOP_GRACE_S = 3

_libc = ctypes.CDLL(None, use_errno=True)


def _load_fetch():
    """The shared ``fetch_files`` reader (``_fetch.py`` beside this file), loaded by path now:
    this script runs with ``-I -S`` (no agentsd import) and the host tree is gone after
    ``pivot_root``."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "agentsd_sandbox_fetch", os.path.join(os.path.dirname(os.path.abspath(__file__)), "_fetch.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


_fetch = _load_fetch()


def _check(ret, what):
    if ret != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")


def mount(src, target, fstype, flags, data=None):
    _check(_libc.mount(src.encode() if src else None, target.encode(),
                       fstype.encode() if fstype else None, ctypes.c_ulong(flags),
                       data.encode() if data else None), f"mount {src} on {target}")


def bind_ro(src, target):
    if os.path.isdir(src):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    mount(src, target, None, MS_BIND | MS_REC)
    mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def build_root(cfg):
    """Assemble the sandbox's root in ``cfg["newroot"]`` (an empty directory that is no ancestor
    of any bound tree, so nothing the sandbox needs is hidden), then ``pivot_root`` into it. The
    sandbox's own directories are made before the binds, and may already exist when the
    interpreter lives under ``/tmp`` or ``/work``: its read-only bind then sits inside them."""
    size_mb = int(cfg["tmpfs_mb"])
    mount(None, "/", None, MS_REC | MS_PRIVATE)  # never propagate anything back to the host
    r = cfg.get("newroot", NEWROOT)
    # no MS_NODEV: /dev's nodes are made here (the program has no CAP_MKNOD to add any)
    mount("tmpfs", r, "tmpfs", MS_NOSUID, f"size={size_mb}m,nr_inodes=16384,mode=755")
    uid = int(cfg["uid"])
    work = r + "/work"
    for d, mode in ((work, 0o700), (r + "/tmp", 0o1777), (r + "/proc", 0o555), (r + "/dev", 0o755)):
        os.mkdir(d)
        os.chmod(d, mode)
    for src, dst in cfg["ro_binds"]:
        if os.path.islink(src) and src == dst:  # merged-/usr symlinks such as /bin -> usr/bin
            os.makedirs(os.path.dirname(r + dst), exist_ok=True)
            os.symlink(os.readlink(src), r + dst)
        elif os.path.exists(src):
            bind_ro(src, r + dst)
    for dst in cfg.get("masks", ()):  # Python package dirs inside the bound system trees
        if os.path.isdir(r + dst) and not os.path.islink(r + dst):
            mount("tmpfs", r + dst, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                  "size=4k,nr_inodes=2,mode=555")
    # hidepid: the program (an unprivileged uid) cannot see pid 1 (root), so neither its command
    # line nor its environment
    mount("proc", r + "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, "hidepid=2")
    make_dev(r + "/dev")
    for rel, data in cfg["files"].items():
        path = os.path.join(work, rel)
        parent = os.path.dirname(path)
        if not os.path.isdir(parent):
            os.makedirs(parent)
            _chown_up(parent, work, uid)
        with open(path, "wb") as f:
            f.write(bytes.fromhex(data))
        os.chown(path, uid, uid)
    os.chown(work, uid, uid)
    os.chdir(r)
    _check(_libc.syscall(SYS_PIVOT_ROOT, b".", b"."), "pivot_root")
    _check(_libc.umount2(b".", MNT_DETACH), "detach old root")
    os.chdir("/")


def make_dev(dev):
    """A minimal ``/dev``: fresh device nodes (no bind of the host's devtmpfs, whose size would
    show in mountinfo), ``shm`` (inside the capped tmpfs) and the fd links."""
    for name, minor in (("null", 3), ("zero", 5), ("full", 7), ("random", 8), ("urandom", 9)):
        try:
            os.mknod(dev + "/" + name, 0o666 | stat.S_IFCHR, os.makedev(1, minor))
            os.chmod(dev + "/" + name, 0o666)
        except PermissionError:  # no CAP_MKNOD (some containers): bind the host's node instead
            bind_dev("/dev/" + name, dev + "/" + name)
    os.mkdir(dev + "/shm")
    os.chmod(dev + "/shm", 0o1777)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
                         ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")):
        os.symlink(target, dev + "/" + name)


def bind_dev(src, target):
    open(target, "a").close()
    mount(src, target, None, MS_BIND)
    mount(None, target, None, MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NOEXEC)


def _chown_up(path, stop, uid):
    while path != stop and path.startswith(stop):
        os.chown(path, uid, uid)
        path = os.path.dirname(path)


def join_cgroups(cfg):
    for d in cfg.get("cgroups", []):
        with open(os.path.join(d, "cgroup.procs"), "w") as f:
            f.write(str(os.getpid()))


def child(cfg, keep_fd):
    """In the forked program process: drop everything, then exec (never returns). Every fd but
    stdio and ``keep_fd`` (close-on-exec, reports a failed exec) is closed, so the program cannot
    write to the status channel."""
    os.closerange(3, keep_fd)
    os.closerange(keep_fd + 1, 65536)
    lim = cfg["limits"]
    mb = 1024 * 1024
    os.setsid()
    for res, val in ((resource.RLIMIT_CPU, (lim["cpu"], lim["cpu"] + 1)),
                     (resource.RLIMIT_AS, (lim["memory_mb"] * mb,) * 2),
                     (resource.RLIMIT_FSIZE, (lim["file_mb"] * mb,) * 2),
                     (resource.RLIMIT_NOFILE, (lim["open_files"],) * 2),
                     (resource.RLIMIT_NPROC, (lim["processes"],) * 2),
                     (resource.RLIMIT_CORE, (0, 0)),
                     (resource.RLIMIT_MEMLOCK, (0, 0)),
                     (resource.RLIMIT_MSGQUEUE, (0, 0))):
        resource.setrlimit(res, val)
    uid = int(cfg["uid"])
    for fd in (0, 1, 2):  # the harness's pipes are root's: let /dev/stdout (re)open them
        try:
            os.fchown(fd, uid, uid)
        except OSError:
            pass
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    nr = cfg.get("keyctl_nr")
    if nr is not None:  # a fresh, empty session keyring owned by this run (the filter then
        _libc.syscall(nr, KEYCTL_JOIN_SESSION_KEYRING, None)  # denies every keyring call)
    _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    os.chdir("/work")
    os.umask(0o077)
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    if cfg.get("seccomp_bpf"):
        install_filter(bytes.fromhex(cfg["seccomp_bpf"]))
    os.execve(cfg["argv"][0], cfg["argv"], cfg["env"])


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install_filter(bpf):
    """Load a classic-BPF seccomp program (built on the host by libseccomp, see
    ``local.seccomp_program``); needs no_new_privs, which is set just before."""
    if len(bpf) % 8:
        raise ValueError("seccomp program is not a whole number of BPF instructions")
    buf = ctypes.create_string_buffer(bpf, len(bpf))
    prog = _SockFprog(len(bpf) // 8, ctypes.cast(buf, ctypes.c_void_p))
    _check(_libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0), "seccomp")


def run_in_namespace(cfg_fd, status_fd):
    """The pid-1 part: build the root, run the program, reap, report (returns an exit code)."""
    status = os.fdopen(status_fd, "w")

    def report(obj):
        status.write(json.dumps(obj) + "\n")
        status.flush()

    try:
        with os.fdopen(cfg_fd, "rb") as f:
            cfg = json.loads(f.read())
        join_cgroups(cfg)
        build_root(cfg)
        _check(_libc.sethostname(b"sandbox", 7), "sethostname")
        # backstop: if the harness is gone (SIGKILLed), nobody kills this namespace at the wall
        # limit; pid 1 then does it itself a little later
        signal.signal(signal.SIGALRM, lambda *_: os.kill(-1, signal.SIGKILL))
        signal.alarm(int(float(cfg["wall_s"])) + BACKSTOP_GRACE_S)
        err_r, err_w = os.pipe()  # the child reports a failed exec through it (CLOEXEC)
        pid = os.fork()
    except Exception as e:  # noqa: BLE001 - everything here is an infrastructure failure
        report({"error": f"{type(e).__name__}: {e}"})
        return 0
    if pid == 0:
        try:
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
            os.close(err_r)
            status.close()
            child(cfg, err_w)
        except BaseException as e:  # noqa: BLE001
            os.write(err_w, f"{type(e).__name__}: {e}".encode()[:2000])
        os._exit(127)
    os.close(err_w)
    main_status = None
    while main_status is None:  # pid 1 reaps orphans too, until the program itself exits
        try:
            got, st, _ = os.wait4(-1, 0)
        except InterruptedError:
            continue
        if got == pid:
            main_status = st
    exec_error = os.read(err_r, 4096).decode(errors="replace")
    try:
        os.kill(-1, signal.SIGKILL)  # everything left in this pid namespace (never pid 1)
    except ProcessLookupError:
        pass
    while True:
        try:
            os.wait4(-1, 0)
        except ChildProcessError:
            break
        except InterruptedError:
            continue
    signal.alarm(0)
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    if exec_error:
        report({"error": f"could not start the program: {exec_error}"})
        return 0
    try:
        files = _fetch.fetch_as(int(cfg["uid"]), cfg.get("fetch_files"), "/work",
                                int(cfg["limits"]["output_kb"]) * 1024)
    except Exception as e:  # noqa: BLE001
        files = {_fetch.FETCH_ERROR: f"fetching files failed: {type(e).__name__}: {e}"}
    report({
        "files_error": files.pop(_fetch.FETCH_ERROR, ""),
        "files": files,
        "exit_code": os.WEXITSTATUS(main_status) if os.WIFEXITED(main_status) else None,
        "signal": os.WTERMSIG(main_status) if os.WIFSIGNALED(main_status) else None,
        "cpu_s": ru.ru_utime + ru.ru_stime,
        "maxrss_kb": ru.ru_maxrss,
    })
    return 0



CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
PR_SET_PDEATHSIG = 1


def one_run(fds):
    """In a child of the zygote: new namespaces, then pid 1 runs :func:`run_in_namespace`; this
    process reports pid 1's host pid first and ``{"reaped": true}`` once pid 1 (and with it the
    whole namespace) is gone, and kills it after the wall limit + grace even if the harness
    died. Never returns."""
    cfg_fd, in_fd, out_fd, err_fd, status_fd = fds
    for src, dst in ((in_fd, 0), (out_fd, 1), (err_fd, 2)):
        os.dup2(src, dst)
        os.close(src)
    def say(obj):
        os.write(status_fd, (json.dumps(obj) + "\n").encode())

    try:
        with os.fdopen(os.dup(cfg_fd), "rb") as f:
            wall = float(json.loads(f.read())["wall_s"])
        os.lseek(cfg_fd, 0, os.SEEK_SET)
        _check(_libc.unshare(CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWPID | CLONE_NEWNET),
               "unshare")
        pid = os.fork()
    except Exception as e:  # noqa: BLE001
        say({"error": f"{type(e).__name__}: {e}"})
        os._exit(0)
    if pid == 0:
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        os._exit(run_in_namespace(cfg_fd, status_fd))
    os.close(cfg_fd)
    for fd in (0, 1, 2):
        os.close(fd)
    say({"pid": pid})
    signal.signal(signal.SIGALRM, lambda *_: os.kill(pid, signal.SIGKILL))
    signal.alarm(int(wall) + 2 * BACKSTOP_GRACE_S)  # second backstop: pid 1's own comes first
    os.waitpid(pid, 0)
    signal.alarm(0)
    say({"reaped": True})
    os._exit(0)


def zygote(sock_fd):
    """Serve runs forever: each message carries five fds (config memfd, stdin, stdout, stderr,
    status); fork :func:`one_run` per message. Exits when the harness closes the socket."""
    import socket

    sock = socket.socket(fileno=sock_fd)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the per-run children
    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(sock, 64, 5)
        except InterruptedError:
            continue
        if not msg:
            return 0
        if len(fds) != 5:
            for fd in fds:
                os.close(fd)
            continue
        pid = os.fork()
        if pid == 0:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            sock.close()
            one_run(fds)
        for fd in fds:
            os.close(fd)


def main():
    if sys.argv[1] == "--zygote":
        return zygote(int(sys.argv[2]))
    return run_in_namespace(int(sys.argv[1]), int(sys.argv[2]))


if __name__ == "__main__":
    try:
        sys.exit(main())
    except OSError as e:
        if e.errno != errno.EPIPE:
            raise
