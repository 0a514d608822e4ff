"""The ``docker`` sandbox backend: one throwaway container per run (docker SDK, extra ``docker``).

Every container has: ``network_mode="none"``; a read-only root filesystem; one tmpfs
``/sbx`` capped at ``Limits.file_mb`` that holds every writable byte (``/work`` — the cwd —,
``/tmp`` and ``/dev/shm`` point into it, so their *sum* is capped, as on the local backend; no
IPC shm of docker's own); memory (no swap), pids and CPU limits; all
capabilities dropped except the few the in-container supervisor needs to write the files and
switch user (SETUID, SETGID, CHOWN, DAC_OVERRIDE, KILL — lost by the program at ``setuid``);
``no-new-privileges``; docker's init as pid 1; the program runs as an unprivileged uid (60000)
with rlimits; the wall clock is enforced inside (the supervisor) and outside (a hard
``kill`` after ``wall_s`` + grace); every container carries the label ``agentsd.sandbox`` and is
removed after its run, and stale labelled containers are removed on start and on ``close()``.

Not isolated: the kernel (shared with the host, as always with containers). The runtime image is
built from local files because no registry is reachable: :func:`build_runtime_image` packs the
same runtime view as the local backend (:mod:`agentsd.sandbox.runtime`: this machine's Python at
``/opt/python``, standard library only unless ``packages`` allow-lists some, a synthetic
``/etc``) and the shared libraries it links into a tarball and ``docker import``\\ s it.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import threading

from agentsd.sandbox.runtime import SANDBOX_PREFIX, SANDBOX_PYTHON
from agentsd.sandbox.types import ExecRequest, ExecResult, SandboxUnavailable, Status

__all__ = ["DockerSandbox", "build_runtime_image", "DEFAULT_IMAGE", "LABEL", "connect"]

#: the runtime image (its tag carries the runtime layout version, so an old image is never reused)
DEFAULT_IMAGE = "agentsd-sandbox-python:view-2"
LABEL = "agentsd.sandbox"
_HERE = os.path.dirname(os.path.abspath(__file__))
_INIT_SRC = os.path.join(_HERE, "_container_init.py")
_FETCH_SRC = os.path.join(_HERE, "_fetch.py")
#: the view's libpython (shared builds) is found through this
_LIB_ENV = {"LD_LIBRARY_PATH": SANDBOX_PREFIX + "/lib"}


def _init_source() -> str:
    """The in-container supervisor's source: the shared ``fetch_files`` reader
    (:mod:`agentsd.sandbox._fetch`), then ``_container_init.py`` (no agentsd in the image)."""
    with open(_FETCH_SRC) as f, open(_INIT_SRC) as g:
        return f.read() + "\n\n" + g.read()


def connect(timeout: float = 10.0):
    """A docker client, or :class:`SandboxUnavailable` saying why (SDK missing, no engine)."""
    try:
        import docker
    except ImportError as e:
        raise SandboxUnavailable("the docker backend needs the docker SDK: pip install 'agentsd[docker]'") from e
    try:
        client = docker.from_env(timeout=int(timeout))
        client.ping()
        return client
    except Exception as e:  # noqa: BLE001 - any connection failure means "no engine"
        raise SandboxUnavailable(
            f"no Docker engine reachable ({type(e).__name__}: {e}); start one (e.g. "
            "`dockerd --iptables=false --bridge=none &`) or use the local backend") from e


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _ldd(path: str) -> list[str]:
    out = subprocess.run(["ldd", path], capture_output=True, text=True).stdout
    libs = []
    for line in out.splitlines():
        parts = line.split()
        if "=>" in parts and len(parts) >= 3 and parts[2].startswith("/"):
            libs.append(parts[2])
        elif parts and parts[0].startswith("/"):
            libs.append(parts[0])
    return libs


def _add_path(tar: tarfile.TarFile, path: str, seen: set[str]) -> None:
    """Add ``path`` (following symlink chains, adding each link and its target) and parents."""
    while path not in seen:
        seen.add(path)
        parent = os.path.dirname(path)
        if parent != "/" and parent not in seen:
            _add_path(tar, parent, seen)
        info = tar.gettarinfo(path, arcname=path.lstrip("/"))
        if info.isdir():
            info.mode = 0o755
            tar.addfile(info)
            return
        if info.issym():
            tar.addfile(info)
            target = os.readlink(path)
            path = target if target.startswith("/") else os.path.normpath(
                os.path.join(os.path.dirname(path), target))
            continue
        with open(path, "rb") as f:
            tar.addfile(info, f)
        return


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, mode
    tar.addfile(info)


def _add_link(tar: tarfile.TarFile, name: str, target: str) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = tarfile.SYMTYPE, target
    tar.addfile(info)


def runtime_tarball(python: str | None = None, packages: tuple[str, ...] = (),
                    uid: int = 60000) -> bytes:
    """A minimal root filesystem (as tar bytes) holding the same runtime view as the local
    backend (:mod:`agentsd.sandbox.runtime`): the interpreter and its standard library (plus
    allow-listed ``packages``) at ``/opt/python``, the synthetic ``/etc``, every shared library
    they link (at its system path), ``/sbx`` for the one capped tmpfs with ``/work`` and
    ``/tmp`` pointing into it."""
    from agentsd.sandbox.runtime import SANDBOX_PREFIX, view_files

    info, files, etc = view_files(python, packages, uid)
    buf = io.BytesIO()
    seen: set[str] = set()
    libs: set[str] = set(_ldd(info["executable"]))
    prefix = SANDBOX_PREFIX.lstrip("/")
    with tarfile.open(fileobj=buf, mode="w") as tar:
        made: set[str] = set()
        for src, rel in files:
            name = f"{prefix}/{rel}"
            parts = name.split("/")
            for i in range(1, len(parts)):
                d = "/".join(parts[:i])
                if d not in made:
                    made.add(d)
                    _add_dir(tar, d)
            ti = tar.gettarinfo(src, arcname=name)
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = "root"
            ti.mode = 0o755 if os.access(src, os.X_OK) else 0o644
            with open(src, "rb") as f:
                tar.addfile(ti, f)
            if src.endswith(".so") or ".so." in os.path.basename(src):
                libs.update(_ldd(src))
        _add_link(tar, f"{prefix}/bin/python", "python3")
        lib_prefix = os.path.dirname(info["libpython"]) if info["libpython"] else None
        for lib in sorted(libs):
            if lib_prefix and lib.startswith(lib_prefix + "/"):
                continue  # libpython travels inside the view (found through LD_LIBRARY_PATH)
            _add_path(tar, lib, seen)
        for d in ("usr", "usr/bin", "etc", "proc", "dev", "sys", "sbx"):
            if "/" + d not in seen:
                seen.add("/" + d)
                _add_dir(tar, d)
        for rel, data in sorted(etc.items()):
            if "/" in rel and "/etc/" + rel.rsplit("/", 1)[0] not in seen:
                seen.add("/etc/" + rel.rsplit("/", 1)[0])
                _add_dir(tar, "etc/" + rel.rsplit("/", 1)[0])
            if isinstance(data, str):
                with open(data, "rb") as f:
                    data = f.read()
            _add_bytes(tar, "etc/" + rel, data)
        _add_link(tar, "usr/bin/python3", SANDBOX_PREFIX + "/bin/python3")
        for d in ("work", "tmp"):  # one tmpfs at /sbx holds every writable byte
            _add_link(tar, d, "sbx/" + d)
    return buf.getvalue()


def image_tag(packages: tuple[str, ...] = ()) -> str:
    """The runtime image's tag: the layout version, and a hash of the allow-list when there is one."""
    import hashlib

    from agentsd.sandbox.runtime import LAYOUT_VERSION

    tag = f"agentsd-sandbox-python:view-{LAYOUT_VERSION}"
    if packages:
        tag += "-" + hashlib.sha256(",".join(sorted(set(packages))).encode()).hexdigest()[:10]
    return tag


def build_runtime_image(client=None, tag: str = DEFAULT_IMAGE, python: str | None = None,
                        packages: tuple[str, ...] = ()) -> str:
    """Build (``docker import``) the runtime image from this machine's Python; returns its id."""
    client = client or connect()
    repo, _, version = tag.partition(":")
    out = client.api.import_image_from_data(runtime_tarball(python, packages), repository=repo,
                                            tag=version or "latest")
    text = out if isinstance(out, str) else json.dumps(out)
    if "error" in text.lower() and "sha256" not in text:
        raise RuntimeError(f"docker import failed: {text[:300]}")
    return client.images.get(tag).id


class DockerSandbox:
    """Per-run containers (see the module docstring for exactly what is isolated).

    ``build_image=True`` builds :data:`DEFAULT_IMAGE` from local files when it is missing.
    ``slots`` bounds concurrent containers of this object.
    """

    name = "docker"

    def __init__(self, image: str = DEFAULT_IMAGE, *, slots: int | None = None,
                 build_image: bool = True, uid: int = 60000, cpus: float = 1.0,
                 grace_s: float = 5.0, packages: tuple[str, ...] = ()) -> None:
        if not isinstance(uid, int) or uid < 1000:
            raise ValueError(f"uid must be an unprivileged int >= 1000, got {uid!r}")
        if not 0 < cpus <= 64:
            raise ValueError(f"cpus must be in (0, 64], got {cpus!r}")
        if isinstance(packages, str) or not all(isinstance(p, str) for p in packages):
            raise ValueError(f"packages must be a sequence of distribution names, got {packages!r}")
        self.packages = tuple(packages)
        if image == DEFAULT_IMAGE and self.packages:
            image = image_tag(self.packages)
        self.image, self.uid, self.cpus, self.grace_s = image, uid, cpus, grace_s
        self.slots = slots or max(1, os.cpu_count() or 1)
        self._build = build_image
        self._sem = threading.BoundedSemaphore(self.slots)
        self._client = None
        self._python = None
        self._closed = False

    def _ready(self):
        if self._client is None:
            client = connect()
            try:
                client.images.get(self.image)
            except Exception:  # noqa: BLE001 - docker.errors.ImageNotFound
                if not self._build:
                    raise SandboxUnavailable(f"image {self.image!r} not found; build it with "
                                             "agentsd.sandbox.docker_backend.build_runtime_image()") from None
                build_runtime_image(client, self.image, packages=self.packages)
            self._python = SANDBOX_PYTHON
            self._client = client
            self.cleanup()
        return self._client

    def cleanup(self, only_mine: bool = False) -> int:
        """Remove labelled containers whose owning process is gone (stale ones from a crashed
        harness) or, with ``only_mine``, only this process's own; returns how many."""
        if self._client is None:
            return 0
        n = 0
        for c in self._client.containers.list(all=True, filters={"label": LABEL}):
            owner = c.labels.get(LABEL + ".owner", "")
            pid = int(owner) if owner.isdigit() else -1
            mine = pid == os.getpid()
            if mine if only_mine else not _alive(pid):
                with contextlib.suppress(Exception):
                    c.remove(force=True)
                    n += 1
        return n

    def run(self, request: ExecRequest) -> ExecResult:
        if not isinstance(request, ExecRequest):
            raise TypeError(f"run() takes an ExecRequest, got {type(request).__name__}")
        if self._closed:
            raise RuntimeError("this DockerSandbox is closed")
        with self._sem:
            try:
                client = self._ready()
            except SandboxUnavailable as e:
                return ExecResult(Status.SANDBOX_ERROR, detail=str(e), backend=self.name)
            container = None
            try:
                container, report, timed_out, oom = self._run(client, request)
                return self._result(request, report, timed_out, oom, container)
            except Exception as e:  # noqa: BLE001 - engine failure, not the code's
                return ExecResult(Status.SANDBOX_ERROR, detail=f"{type(e).__name__}: {e}",
                                  backend=self.name)
            finally:
                if container is not None:
                    with contextlib.suppress(Exception):
                        container.remove(force=True)

    def _run(self, client, req: ExecRequest):
        lim = req.limits
        cmd = req.argv(self._python)
        if cmd[0] in ("python", "python3") or (
                os.path.isabs(cmd[0]) and os.path.realpath(cmd[0]) == os.path.realpath(sys.executable)):
            cmd[0] = self._python
        payload = {
            "files": {k: base64.b64encode(v).decode() for k, v in req.all_files().items()},
            "stdin": base64.b64encode(req.stdin_bytes()).decode(),
            "argv": cmd, "uid": self.uid, "fetch_files": list(req.fetch_files),
            "env": {"PATH": f"{os.path.dirname(self._python)}:/usr/bin", "HOME": "/work", **_LIB_ENV,
                    "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"},
            "limits": {"cpu": lim.cpu_seconds, "memory_mb": lim.memory_mb, "file_mb": lim.file_mb,
                       "open_files": lim.open_files, "processes": lim.processes,
                       "wall_s": lim.wall_s, "output_kb": lim.output_kb},
        }
        blob = json.dumps(payload).encode()
        init_src = _init_source()
        mem = (lim.memory_mb + lim.file_mb + 64) * 1024 * 1024  # tmpfs pages count as memory
        tmpfs_opts = f"size={lim.file_mb}m,nr_inodes=16384"
        container = client.containers.create(
            self.image, [self._python, "-I", "-S", "-c", init_src],
            stdin_open=True,
            user="0:0", working_dir="/", network_mode="none", read_only=True,
            tmpfs={"/sbx": tmpfs_opts + ",mode=755"},  # /work, /tmp, /dev/shm: one cap in all
            mem_limit=mem, memswap_limit=mem, pids_limit=lim.processes + 4,
            nano_cpus=int(self.cpus * 1e9), cap_drop=["ALL"],
            cap_add=["SETUID", "SETGID", "CHOWN", "DAC_OVERRIDE", "KILL"],
            security_opt=["no-new-privileges"], init=True, labels={LABEL: "1", LABEL + ".owner": str(os.getpid())},
            log_config={"type": "json-file", "config": {"max-size": "8m"}},
            environment=dict(_LIB_ENV), hostname="sandbox", ipc_mode="none",
        )
        # the payload goes over the attached stdin (no size cap from argv or env limits)
        sock = container.attach_socket(params={"stdin": 1, "stream": 1})
        raw = getattr(sock, "_sock", sock)
        try:
            container.start()
            raw.sendall(b"%d\n" % len(blob) + blob)  # length-prefixed: no EOF needed
        finally:
            with contextlib.suppress(OSError):
                raw.shutdown(socket.SHUT_WR)
            sock.close()
        timed_out = False
        try:
            container.wait(timeout=lim.wall_s + self.grace_s)
        except Exception:  # noqa: BLE001 - requests ReadTimeout: the hard kill
            timed_out = True
            with contextlib.suppress(Exception):
                container.kill()
            container.wait(timeout=30)
        container.reload()
        oom = bool(container.attrs.get("State", {}).get("OOMKilled"))
        logs = container.logs(stdout=True, stderr=False)
        report = None
        for line in reversed(logs.splitlines()):
            if line.startswith(b"AGENTSD-REPORT "):
                report = json.loads(line[len(b"AGENTSD-REPORT "):])
                break
        if report is None:
            report = {"error_log": container.logs(stdout=False, stderr=True)[-2000:].decode(errors="replace")}
        return container, report, timed_out, oom

    def _result(self, req: ExecRequest, rep: dict, timed_out: bool, oom: bool, container) -> ExecResult:
        from agentsd.sandbox.local import _IO, _classify

        lim = req.limits
        if "error_log" in rep:
            if timed_out:
                return ExecResult(Status.TIMEOUT, detail=f"wall-clock limit of {lim.wall_s:g}s reached "
                                  "(hard kill)", wall_s=lim.wall_s, backend=self.name)
            if oom:
                return ExecResult(Status.MEMORY, detail=f"memory limit of {lim.memory_mb} MiB reached "
                                  "(supervisor OOM-killed)", backend=self.name)
            return ExecResult(Status.SANDBOX_ERROR, detail="no report from the container: "
                              + rep["error_log"][-500:], backend=self.name)
        io_ = _IO(stdout=base64.b64decode(rep["stdout"]), stderr=base64.b64decode(rep["stderr"]),
                  out_trunc=rep["stdout_truncated"], err_trunc=rep["stderr_truncated"],
                  timed_out=rep["timed_out"], flooded=rep["flooded"],
                  status={"exit_code": rep["exit_code"], "signal": rep["signal"], "cpu_s": rep["cpu_s"],
                          "files": rep.get("files"), "files_error": rep.get("files_error", "")},
                  wall_s=rep["wall_s"])
        res = _classify(io_, lim, oom)
        res.backend = self.name
        return res

    def describe(self) -> dict:
        return {"backend": self.name, "image": self.image, "slots": self.slots, "uid": self.uid}

    def close(self) -> None:
        """Remove any labelled containers left and drop the client (idempotent)."""
        self._closed = True
        if self._client is not None:
            with contextlib.suppress(Exception):
                self.cleanup(only_mine=True)
            with contextlib.suppress(Exception):
                self._client.close()
            self._client = None

    def __getstate__(self):
        return {"image": self.image, "slots": self.slots, "build_image": self._build,
                "uid": self.uid, "cpus": self.cpus, "grace_s": self.grace_s, "packages": self.packages}

    def __setstate__(self, state) -> None:
        self.__init__(**state)
