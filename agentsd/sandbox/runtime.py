"""What graded code sees of the host: the sandbox *runtime view*, one layout for every backend.

A program in the sandbox needs an interpreter, its standard library and the system's shared
libraries — nothing that grades or describes a task. So no backend shows it the host's Python
prefix. Instead each sees:

- ``/opt/python`` (:data:`SANDBOX_PREFIX`): the interpreter binary (``bin/python3``, also
  ``bin/python``), its standard library without ``site-packages``/``dist-packages``, tests,
  IDLE/tkinter and build files, and — only when the caller allow-lists them
  (``packages=("numpy",)``) — the files of those distributions, placed in the standard library
  directory so they import under ``-S`` too. ``sys.prefix`` is ``/opt/python``;
- ``/etc``: a synthetic one (``passwd``/``group`` with root and the sandbox user, ``hosts``,
  ``hostname``, ``nsswitch.conf``, and the dynamic loader's cache and config copied from the
  host) — never the host's ``/etc``;
- on ``local`` (namespaces): the host's ``/usr``, ``/bin``, ``/lib*`` read-only for shared
  libraries and tools, with every Python package directory in them
  (:func:`package_dirs`: ``/usr/lib/python3*/dist-packages``, ``/usr/local/lib/python3*/…``, the
  interpreter's own ``site.getsitepackages()``) covered by an empty read-only tmpfs; on
  ``docker``: only the shared libraries the runtime links.

The view is built once per (interpreter, allow-list) into :data:`CACHE_DIR` (hard links where
the filesystem allows, copies otherwise) and bound read-only, so ``/proc/self/mountinfo`` names
only agentsd's cache path and standard system paths. The project folder, run folders and the
trajectory store are never bound. The standard library's ``_sysconfigdata`` module still names
the prefix the interpreter was built for (a string; nothing is there).

    >>> from agentsd.sandbox.runtime import SANDBOX_PREFIX, SANDBOX_PYTHON
    >>> SANDBOX_PREFIX, SANDBOX_PYTHON
    ('/opt/python', '/opt/python/bin/python3')
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass

__all__ = ["Runtime", "runtime_for", "package_dirs", "SANDBOX_PREFIX", "SANDBOX_PYTHON",
           "CACHE_DIR", "LAYOUT_VERSION"]

SANDBOX_PREFIX = "/opt/python"
SANDBOX_PYTHON = SANDBOX_PREFIX + "/bin/python3"
#: where built views live (root-owned; bound read-only into each run)
CACHE_DIR = "/var/cache/agentsd-sandbox/runtime"
#: bump when the layout changes (old views and docker images are then rebuilt, not reused)
LAYOUT_VERSION = 2
#: standard-library folders a graded program never needs (and that hold test data or build files)
EXCLUDE_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idlelib", "tkinter",
                          "turtledemo", "ensurepip", "lib2to3", "pydoc_data"})
#: where Python packages live in a system tree (besides the interpreter's own site dirs)
PACKAGE_GLOBS = ("/usr/lib/python3*/site-packages", "/usr/lib/python3*/dist-packages",
                 "/usr/lib/python3/dist-packages", "/usr/local/lib/python3*/site-packages",
                 "/usr/local/lib/python3*/dist-packages", "/usr/lib64/python3*/site-packages",
                 "/usr/share/python3", "/usr/share/pyshared", "/usr/share/python-wheels")
_ETC_COPY = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "ssl/openssl.cnf")

# runs in the target interpreter (which may be another version or a venv): what to copy
_PROBE = r"""
import json, os, site, sys, sysconfig
packages = json.loads(sys.argv[1])
cv = sysconfig.get_config_var
out = {"version": "%d.%d" % sys.version_info[:2], "executable": os.path.realpath(sys.executable),
       "stdlib": os.path.realpath(sysconfig.get_path("stdlib")),
       "platstdlib": os.path.realpath(sysconfig.get_path("platstdlib")),
       "cache_tag": sys.implementation.cache_tag,
       "libpython": None, "site": [], "packages": {}}
if cv("Py_ENABLE_SHARED") and cv("LIBDIR") and cv("INSTSONAME"):
    p = os.path.join(cv("LIBDIR"), cv("INSTSONAME"))
    out["libpython"] = os.path.realpath(p) if os.path.exists(p) else None
try:
    out["site"] = [os.path.realpath(p) for p in site.getsitepackages() + [site.getusersitepackages()]]
except Exception:
    pass
out["site"] += [os.path.realpath(p) for p in sys.path if p.endswith(("site-packages", "dist-packages"))]
from importlib import metadata
for name in packages:
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        out["packages"][name] = None
        continue
    root = os.path.realpath(str(dist.locate_file("")))
    files = []
    for f in dist.files or []:
        p = os.path.realpath(str(dist.locate_file(f)))
        rel = os.path.relpath(p, root)
        if rel.startswith("..") or ".dist-info" in rel or rel.endswith(".pth") or not os.path.isfile(p):
            continue
        files.append([p, rel])
    out["packages"][name] = files
print(json.dumps(out))
"""


@dataclass(frozen=True)
class Runtime:
    """A built view: ``root`` holds ``python/`` (bound at :data:`SANDBOX_PREFIX`) and ``etc/``
    (bound at ``/etc``); ``masks`` are the package directories to cover in bound system trees;
    ``env`` what the program's environment needs (``LD_LIBRARY_PATH`` for a shared libpython)."""

    root: str
    masks: tuple[str, ...]
    env: dict
    host_python: str

    @property
    def python_dir(self) -> str:
        return os.path.join(self.root, "python")

    @property
    def etc_dir(self) -> str:
        return os.path.join(self.root, "etc")


def _probe(python: str, packages: tuple[str, ...]) -> dict:
    r = subprocess.run([python, "-E", "-s", "-c", _PROBE, json.dumps(list(packages))],
                       capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})
    if r.returncode != 0:
        raise RuntimeError(f"could not inspect the interpreter {python}: {r.stderr.strip()[-300:]}")
    info = json.loads(r.stdout)
    missing = [p for p, files in info["packages"].items() if files is None]
    if missing:
        raise ValueError(f"packages allow-list: {', '.join(missing)} not installed for {python} "
                         "(LocalSandbox/DockerSandbox packages=...)")
    return info


def _stdlib_files(info: dict) -> list[tuple[str, str]]:
    """(host path, path under the view's ``python/``) for the interpreter and its stdlib."""
    ver = info["version"]
    tag = info["cache_tag"] + "."
    out = [(info["executable"], "bin/python3")]
    if info["libpython"]:
        out.append((info["libpython"], "lib/" + os.path.basename(info["libpython"])))
    roots = [info["stdlib"]] + ([info["platstdlib"]] if info["platstdlib"] != info["stdlib"] else [])
    for base in roots:
        for root, dirs, files in os.walk(base):
            dirs[:] = sorted(d for d in dirs if d not in EXCLUDE_DIRS and not d.startswith("config-"))
            in_cache = os.path.basename(root) == "__pycache__"
            for n in sorted(files):
                if in_cache and not n.endswith(tag + "pyc"):
                    continue  # only the plain .pyc of this interpreter: no opt-1/opt-2 copies
                src = os.path.join(root, n)
                if os.path.isfile(src):
                    out.append((src, os.path.join("lib", f"python{ver}", os.path.relpath(src, base))))
    return out


def _etc_files(uid_base: int) -> dict[str, bytes | str]:
    """The synthetic ``/etc`` (name -> bytes, or a host path to copy)."""
    etc: dict[str, bytes | str] = {
        "passwd": (f"root:x:0:0:root:/root:/bin/false\nsandbox:x:{uid_base}:{uid_base}::/work:/bin/false\n"
                   "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n").encode(),
        "group": f"root:x:0:\nsandbox:x:{uid_base}:\nnogroup:x:65534:\n".encode(),
        "hosts": b"127.0.0.1\tlocalhost\n::1\tlocalhost\n",
        "hostname": b"sandbox\n",
        "nsswitch.conf": b"passwd: files\ngroup: files\nhosts: files\n",
    }
    for name in _ETC_COPY:
        src = os.path.join("/etc", name)
        if os.path.isdir(src):
            for n in sorted(os.listdir(src)):
                if os.path.isfile(os.path.join(src, n)):
                    etc[f"{name}/{n}"] = os.path.join(src, n)
        elif os.path.isfile(src):
            etc[name] = src
    return etc


def _place(src: str, dst: str) -> None:
    """A hard link where the filesystem allows and the file is world-readable (a link shares
    the host file's mode, which is never changed here), a copy (readable, mtime kept so the
    stdlib's ``.pyc`` stay valid) otherwise."""
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    if os.stat(src).st_mode & 0o004:
        with contextlib.suppress(OSError):
            os.link(src, dst)
            return
    shutil.copy2(src, dst)
    os.chmod(dst, 0o755 if os.access(src, os.X_OK) else 0o644)


def _build(dest: str, files: list[tuple[str, str]], etc: dict[str, bytes | str]) -> None:
    """Assemble the view in a temporary sibling and rename it into place (atomic: concurrent
    builders never see half a view, and the loser of a race discards its copy)."""
    os.makedirs(os.path.dirname(dest), mode=0o755, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".build-", dir=os.path.dirname(dest))
    try:
        for src, rel in files:
            _place(src, os.path.join(tmp, "python", rel))
        os.symlink("python3", os.path.join(tmp, "python", "bin", "python"))
        for rel, data in etc.items():
            path = os.path.join(tmp, "etc", rel)
            if isinstance(data, str):
                _place(data, path)
            else:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as f:
                    f.write(data)
                os.chmod(path, 0o644)
        for root, dirs, _ in os.walk(tmp):
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o755)
        os.chmod(tmp, 0o755)
        try:
            os.rename(tmp, dest)
        except OSError:
            if not os.path.isdir(dest):
                raise
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def view_files(python: str | None = None, packages: tuple[str, ...] = (),
               uid_base: int = 60000) -> tuple[dict, list[tuple[str, str]], dict[str, bytes | str]]:
    """The probe of ``python`` and what the view holds: ``(info, [(host path, path under
    python/)], {etc name: bytes or host path})`` (the docker backend packs the same lists)."""
    python = os.path.realpath(python or sys.executable)
    packages = tuple(sorted(set(packages)))
    for p in packages:
        if not isinstance(p, str) or not p or "/" in p:
            raise ValueError(f"packages must be distribution names, got {p!r}")
    info = _probe(python, packages)
    files = _stdlib_files(info)
    for name in packages:
        files += [(src, os.path.join("lib", f"python{info['version']}", rel))
                  for src, rel in info["packages"][name]]
    return info, files, _etc_files(uid_base)


def _key(info: dict, files: list[tuple[str, str]], etc: dict, uid_base: int) -> str:
    h = hashlib.sha256(json.dumps([LAYOUT_VERSION, info["executable"], uid_base]).encode())
    for src, rel in files:
        st = os.stat(src)
        h.update(f"{src}\0{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    for rel, data in sorted(etc.items()):
        h.update(rel.encode() + b"\0" + (data if isinstance(data, bytes) else
                                          open(data, "rb").read()))  # noqa: SIM115 - small files
    return h.hexdigest()[:24]


_BUILT: dict[tuple, Runtime] = {}


def runtime_for(python: str | None = None, packages: tuple[str, ...] = (),
                uid_base: int = 60000) -> Runtime:
    """The view for ``python`` (default: this interpreter) with ``packages`` allow-listed,
    built into :data:`CACHE_DIR` on first use (once per process per configuration)."""
    ck = (os.path.realpath(python or sys.executable), tuple(sorted(set(packages))), uid_base)
    if ck in _BUILT and os.path.isdir(_BUILT[ck].root):
        return _BUILT[ck]
    info, files, etc = view_files(python, packages, uid_base)
    dest = os.path.join(CACHE_DIR, _key(info, files, etc, uid_base))
    if not os.path.isdir(dest):
        _build(dest, files, etc)
    env = {"LD_LIBRARY_PATH": SANDBOX_PREFIX + "/lib"} if info["libpython"] else {}
    rt = Runtime(dest, tuple(package_dirs(info["site"])), env, info["executable"])
    _BUILT[ck] = rt
    return rt


def package_dirs(extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Python package directories inside the system trees a sandbox binds (``/usr``…): the
    :data:`PACKAGE_GLOBS`, this interpreter's site dirs and ``extra`` — each to be covered."""
    cands = set(extra)
    for pat in PACKAGE_GLOBS:
        cands.update(glob.glob(pat))
    with contextlib.suppress(Exception):
        import site

        cands.update(site.getsitepackages())
    out = []
    for p in sorted(cands):
        real = os.path.realpath(p)
        for q in (p, real):
            if os.path.isdir(q) and q not in out:
                out.append(q)
    return out
