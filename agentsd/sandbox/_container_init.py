"""The in-container supervisor of the ``docker`` backend (stdlib only; runs as ``python -I -S -c``).

It starts as root *inside* a container that already has no network, a read-only root, one
tmpfs ``/sbx`` (``/work`` and ``/tmp`` are links into it; this supervisor makes their
directories and points ``/dev/shm`` there too, so one cap holds every writable byte), no
capabilities but SETUID/SETGID/CHOWN/KILL/DAC_OVERRIDE, and
no-new-privileges. It writes the files, forks the program as the unprivileged uid with rlimits,
collects stdout/stderr up to the cap, enforces the wall clock, kills everything the program left
(``kill(-1)``), and prints one JSON report line on its real stdout. The program cannot signal
it (different uid, no capabilities left after ``setuid``).

The payload (files and stdin base64-encoded, argv, limits) arrives on its stdin as a length line
and that many bytes of JSON. ``fetch_files`` are read by the shared reader
(:mod:`agentsd.sandbox._fetch`), whose source the docker backend puts in front of this one.
"""

import base64
import json
import os
import resource
import select
import signal
import sys
import time


def main():
    n = int(sys.stdin.buffer.readline())
    cfg = json.loads(sys.stdin.buffer.read(n))
    os.close(0)
    lim, uid = cfg["limits"], int(cfg["uid"])
    for d, mode in (("/sbx/work", 0o755), ("/sbx/tmp", 0o1777), ("/sbx/shm", 0o1777)):
        os.makedirs(d, exist_ok=True)
        os.chmod(d, mode)
    try:  # docker mounts no /dev/shm with ipc_mode="none": the capped tmpfs serves it
        if not os.path.exists("/dev/shm"):
            os.symlink("/sbx/shm", "/dev/shm")
    except OSError:
        pass
    for rel, data in cfg["files"].items():
        path = os.path.join("/work", rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
    for root, dirs, files in os.walk("/work"):
        for n in dirs + files:
            os.chown(os.path.join(root, n), uid, uid)
    os.chown("/work", uid, uid)
    stdin_path = "/tmp/.agentsd-stdin"
    with open(stdin_path, "wb") as f:
        f.write(base64.b64decode(cfg["stdin"]))
    os.chmod(stdin_path, 0o400)
    os.chown(stdin_path, uid, uid)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        try:
            os.setsid()
            fd = os.open(stdin_path, os.O_RDONLY)
            os.unlink(stdin_path)
            for src, dst in ((fd, 0), (out_w, 1), (err_w, 2)):
                os.dup2(src, dst)
            for fd in (1, 2):  # root's pipes: let /dev/stdout and /dev/stderr (re)open them
                os.fchown(fd, uid, uid)
            mb = 1024 * 1024
            for res, val in ((resource.RLIMIT_CPU, (lim["cpu"], lim["cpu"] + 1)),
                             (resource.RLIMIT_AS, (lim["memory_mb"] * mb,) * 2),
                             (resource.RLIMIT_FSIZE, (lim["file_mb"] * mb,) * 2),
                             (resource.RLIMIT_NOFILE, (lim["open_files"],) * 2),
                             (resource.RLIMIT_NPROC, (lim["processes"],) * 2),
                             (resource.RLIMIT_CORE, (0, 0))):
                resource.setrlimit(res, val)
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
            os.chdir("/work")
            os.umask(0o077)
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
            os.execve(cfg["argv"][0], cfg["argv"], cfg["env"])
        except BaseException as e:  # noqa: BLE001
            os.write(2, f"agentsd-sandbox: could not start the program: {e}".encode())
        os._exit(127)
    os.close(out_w)
    os.close(err_w)
    cap = lim["output_kb"] * 1024
    bufs = {out_r: bytearray(), err_r: bytearray()}
    total, flooded, timed_out = 0, False, False
    status = None
    trunc = {out_r: False, err_r: False}
    open_fds = [out_r, err_r]
    deadline = t0 + lim["wall_s"]

    def pump(timeout):
        nonlocal total, flooded
        ready, _, _ = select.select(open_fds, [], [], timeout)
        for fd in ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                open_fds.remove(fd)
                continue
            total += len(chunk)
            room = cap - len(bufs[out_r]) - len(bufs[err_r])
            bufs[fd] += chunk[:max(0, room)]
            if total > cap:
                flooded = trunc[fd] = True

    while status is None and not flooded:
        left = deadline - time.monotonic()
        if left <= 0:
            timed_out = True
            break
        if open_fds:
            pump(min(left, 0.05))
        else:
            time.sleep(min(left, 0.005))
        got, st = os.waitpid(pid, os.WNOHANG)
        if got == pid:
            status = st
    try:
        os.kill(-1, signal.SIGKILL)  # everything the program left (never us or the init)
    except ProcessLookupError:
        pass
    if status is None:
        _, status = os.waitpid(pid, 0)
    while open_fds and not flooded:  # writers are dead now: drain to EOF
        pump(1.0)
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    # fetch_as/FETCH_ERROR: the shared reader (_fetch.py), whose source the docker backend
    # prepends to this one (the container has no agentsd to import)
    files = fetch_as(uid, cfg.get("fetch_files"), "/work", lim["output_kb"] * 1024)  # noqa: F821
    report = {
        "files_error": files.pop(FETCH_ERROR, ""),  # noqa: F821
        "files": files,
        "exit_code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
        "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
        "cpu_s": ru.ru_utime + ru.ru_stime, "wall_s": time.monotonic() - t0,
        "timed_out": timed_out, "flooded": flooded,
        "stdout": base64.b64encode(bytes(bufs[out_r])).decode(),
        "stderr": base64.b64encode(bytes(bufs[err_r])).decode(),
        "stdout_truncated": trunc[out_r], "stderr_truncated": trunc[err_r],
    }
    sys.stdout.write("\nAGENTSD-REPORT " + json.dumps(report) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
