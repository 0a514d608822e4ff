"""The ``local`` sandbox's seccomp filter, built by libseccomp (``pyseccomp``) on the host and
loaded by the launcher just before ``exec`` (see :mod:`agentsd.sandbox.local` for what it denies)."""

from __future__ import annotations

import contextlib
import tempfile

from agentsd.sandbox.types import SandboxUnavailable

__all__ = ["seccomp_program", "DENIED_SYSCALLS"]

#: syscalls the program may not make (``EPERM``): kernel keyrings (state that would outlive the
#: run under a reused uid), namespaces and mounts, tracing and other processes' memory, BPF,
#: perf, kernel modules and other host-wide administration
DENIED_SYSCALLS = (
    "keyctl", "add_key", "request_key",
    "unshare", "setns", "mount", "umount2", "pivot_root", "chroot", "fsopen", "fsconfig", "fsmount",
    "fspick", "move_mount", "open_tree", "mount_setattr",
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "reboot",
    "swapon", "swapoff", "syslog", "acct", "quotactl", "settimeofday", "clock_settime",
    "clock_adjtime", "adjtimex", "sethostname", "setdomainname", "name_to_handle_at",
    "open_by_handle_at", "lookup_dcookie", "iopl", "ioperm", "personality",
)
#: clone(2) flags that would create namespaces (a new user namespace first of all)
_CLONE_NS_FLAGS = (0x00020000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000,
                   0x02000000, 0x00000080)  # NEWNS UTS IPC USER PID NET CGROUP TIME
AF_VSOCK = 40
_SECCOMP: dict[str, object] = {}


def seccomp_program() -> tuple[bytes, int]:
    """The seccomp filter as classic-BPF bytes, built once per process by libseccomp
    (``pyseccomp``): default allow, :data:`DENIED_SYSCALLS` and namespace-creating ``clone``
    flags fail with ``EPERM``, ``clone3`` with ``ENOSYS`` (its flags sit behind a pointer, so
    libc falls back to ``clone``), foreign architectures are killed. Also returns the number of
    ``keyctl`` here (the launcher joins a fresh session keyring before the filter is on)."""
    if "bpf" not in _SECCOMP:
        import errno

        try:
            import pyseccomp as sc

            f = sc.SyscallFilter(sc.ALLOW)
        except (ImportError, OSError, RuntimeError) as e:
            raise SandboxUnavailable(
                f"the seccomp filter needs libseccomp's Python bindings ({type(e).__name__}: {e}); "
                "pip install pyseccomp (and the libseccomp2 system library), or pass seccomp=False "
                "to run without the filter") from e
        for name in DENIED_SYSCALLS:
            with contextlib.suppress(ValueError, OSError, RuntimeError):  # absent on this arch
                f.add_rule(sc.ERRNO(errno.EPERM), name)
        for flag in _CLONE_NS_FLAGS:
            f.add_rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, flag, flag))
        with contextlib.suppress(ValueError, OSError, RuntimeError):
            f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
        for call in ("socket", "socketpair"):  # AF_VSOCK reaches the hypervisor, not the netns
            f.add_rule(sc.ERRNO(errno.EAFNOSUPPORT), call, sc.Arg(0, sc.EQ, AF_VSOCK))
        with tempfile.TemporaryFile() as t:
            f.export_bpf(t)
            t.seek(0)
            _SECCOMP["bpf"] = t.read()
        _SECCOMP["keyctl"] = sc.resolve_syscall(sc.system_arch(), "keyctl")
    return _SECCOMP["bpf"], _SECCOMP["keyctl"]  # type: ignore[return-value]
