"""The inspection child's confinement on Linux, applied before it reads the upload.

:func:`confine` applies each step where the machine allows it and reports which ones
were (the child tells the parent, which logs it once):

- environment: cleared (only PATH, LANG and thread/plugin variables are passed);
- limits: RLIMIT_CPU, RLIMIT_AS, no core files, no file writes (RLIMIT_FSIZE=0) and a
  wall-clock timeout (:func:`limit`; the timeout is the parent's, k2e.vetting.runner);
- network: a new, empty network namespace (``unshare(CLONE_NEWNET)`` through libc; needs
  root or unprivileged user namespaces): no interface but a down loopback, so no TCP or
  UDP connection to anywhere, the service's own ports included;
- the service's files, when the child runs as root: a private mount namespace in which
  the data folder (``K2E_DATA_DIR``: the admin key file, the SQLite job store, every
  tenant's uploads and models), the SQLite file's folder and /tmp are covered by empty
  read-only tmpfs mounts; the child reads the upload alone, bind-mounted at
  ``/tmp/<name>`` from a descriptor opened before the folders were covered;
- what it reads, once confined: the upload alone. It loads its modules and data first
  and then refuses any other import or open (k2e.vetting.sealing): as ``nobody`` it could
  not read a private folder holding k2e or its venv;
- privileges, when the child runs as root: it then becomes ``nobody`` (uid/gid 65534,
  no supplementary groups) before reading, so it cannot read root's 0600 files nor
  undo the mounts. Without a mount namespace (a container without CAP_SYS_ADMIN) it
  still does when the upload is reachable by any user, the data folder then staying
  visible: 0600 files (the admin key) are safe, world-readable ones (an SQLite store
  created under umask 022) are not. Skipped (logged) when the upload is not readable.

It does not confine: reads of other world-readable files on the machine (/etc, the
Python installation), the filesystem view when the service does not run as root (the
child can read what the service's user can read, but has no network), system calls in
general (no seccomp filter), or other processes of the same user (no PID namespace).
"""

import ctypes
import os
import resource
import sys
from pathlib import Path

# Where the k2e package lives: the child runs `-m k2e.vetting.child` from there.
PACKAGE_PARENT = Path(__file__).resolve().parents[2]

_CLONE_NEWNS = 0x00020000
_CLONE_NEWNET = 0x40000000
_CLONE_USERNET = 0x10000000 | _CLONE_NEWNET  # with a user namespace, for non-root
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 0x4000, 1 << 18
_NOBODY = 65534


def limit(cpu_seconds: int, memory_bytes: int) -> None:
    """The child's rlimits: CPU time (beyond what its imports used), address space, no
    core files, no file writes."""
    used = resource.getrusage(resource.RUSAGE_SELF)
    cpu = int(used.ru_utime + used.ru_stime) + 1 + cpu_seconds  # imports are not the file's
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (0, 0))  # the child writes no files


def confine(path: str, hidden: list[str]) -> tuple[str, list[str]]:
    """In the child, before it reads anything: the confinement the module docstring
    describes. Returns the path to read the file by, and what was confined."""
    libc = ctypes.CDLL(None, use_errno=True)
    done: list[str] = ["environment cleared", "rlimits"]

    def call(what: str, result: int) -> bool:
        if result == 0:
            return True
        done.append(f"no {what} ({os.strerror(ctypes.get_errno())})")
        return False

    if libc.unshare(_CLONE_NEWNET) == 0 or (
        os.geteuid() != 0 and libc.unshare(_CLONE_USERNET) == 0
    ):
        done.append("no network")
    else:
        done.append(f"network NOT confined ({os.strerror(ctypes.get_errno())})")
    if os.geteuid() != 0:
        done.append("files: the service user's view (not root: no mount namespace)")
        return path, done
    namespace = call("mount namespace", libc.unshare(_CLONE_NEWNS)) and call(
        "private mounts", libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None)
    )
    # Opened in the new namespace (a bind mount's source must be of it), before hiding.
    fd = os.open(path, os.O_RDONLY)
    scratch = _scratch_mountpoint()
    shown = os.path.join(scratch or "/tmp", os.path.basename(path))
    if namespace:
        flags = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
        tmpfs = b"size=64k,mode=0755"
        remount = _MS_REMOUNT | _MS_RDONLY | flags
        for folder in hidden:
            if os.path.isdir(folder) and call(
                f"hiding {folder}", libc.mount(b"tmpfs", folder.encode(), b"tmpfs", flags, tmpfs)
            ):
                libc.mount(None, folder.encode(), None, remount, None)
                done.append(f"hidden {folder}")
        # The upload alone, under a fresh /tmp that any user can reach (the folders
        # above it may not be), bound from the descriptor opened above.
        if scratch is None:
            done.append("/tmp NOT hidden (k2e or Python lives under each scratch folder)")
        elif call(
            f"fresh {scratch}", libc.mount(b"tmpfs", scratch.encode(), b"tmpfs", flags, tmpfs)
        ):
            os.close(os.open(shown, os.O_WRONLY | os.O_CREAT, 0o444))
            source = f"/proc/self/fd/{fd}".encode()
            if call(f"showing {shown}", libc.mount(source, shown.encode(), None, _MS_BIND, None)):
                libc.mount(None, scratch.encode(), None, remount, None)
                done.append(f"hidden {scratch}")
                path = shown
    if path != shown and not reachable_by_anyone(path):
        done.append("stays root (the upload is not reachable by other users)")
    elif os.fstat(fd).st_mode & 0o004:
        os.setgroups([])
        os.setgid(_NOBODY)
        os.setuid(_NOBODY)
        done.append("user nobody")
    else:
        done.append("stays root (the upload is not world-readable)")
    os.close(fd)
    return path, done


def _scratch_mountpoint() -> str | None:
    """The folder a fresh tmpfs covers to show the upload alone: /tmp, unless the code the
    child still imports (k2e, the Python installation, the venv) lives under it (a
    checkout in /tmp), then /var/tmp or /mnt; None when each holds code."""
    code = {
        os.path.realpath(p)
        for p in (
            sys.prefix,
            sys.base_prefix,
            str(PACKAGE_PARENT),
            os.path.dirname(sys.executable),
        )
    }
    for candidate in ("/tmp", "/var/tmp", "/mnt"):
        if os.path.isdir(candidate) and not any(
            root == candidate or root.startswith(candidate + "/") for root in code
        ):
            return candidate
    return None


def reachable_by_anyone(path: str) -> bool:
    """Every folder above ``path`` searchable by others, the file readable by others."""
    try:
        if not os.stat(path).st_mode & 0o004:
            return False
        parent = os.path.dirname(path)
        while True:
            if not os.stat(parent).st_mode & 0o001:
                return False
            if parent == os.path.dirname(parent):
                return True
            parent = os.path.dirname(parent)
    except OSError:
        return False
