"""bubblewrap's command line for one run: the namespaces and the root the code sees."""

from __future__ import annotations

import os
import sysconfig
from pathlib import Path

from sandbox.limits import MIB

WORKDIR = "/sandbox"


def bwrap_argv(
    bwrap: str,
    python: Path,
    runtime: tuple[Path, Path],
    tmpfs_mb: int,
    fresh_proc: bool = True,
    seccomp_fd: int | None = None,
) -> list[str]:
    """`bwrap ... <interpreter>`; `runtime` is staging.runtime_bind's (host source, sandbox destination).

    `fresh_proc=False`: an empty /proc (a directory of the read-only root) instead of a procfs
    of the run's own pid namespace, for where the kernel refuses to mount one (runner.py).
    `seccomp_fd`: forbid new user namespaces with seccomp.py's filter, read from this fd,
    instead of `--disable-userns`, for where /proc/sys is read-only (runner.py)."""
    src, dst = runtime
    argv = [
        bwrap,
        "--unshare-all",
        "--unshare-user",
        *(["--disable-userns"] if seccomp_fd is None else ["--seccomp", str(seccomp_fd)]),
        "--uid", "65534", "--gid", "65534",
        "--hostname", "sandbox",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
        "--setenv", "PATH", "/usr/bin:/bin",
        "--setenv", "HOME", WORKDIR,
        "--setenv", "LANG", "C.UTF-8",
        "--ro-bind", "/usr", "/usr",
    ]  # fmt: skip
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            argv += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            argv += ["--ro-bind", top, top]
    if not str(dst).startswith("/usr/"):
        argv += ["--ro-bind", str(src), str(dst)]
        # the interpreter's own site-packages are not for untrusted code (-S already keeps
        # them off sys.path; masking them also keeps them unreadable)
        site = Path(sysconfig.get_paths()["stdlib"]) / "site-packages"
        if site.is_relative_to(dst) and (src / site.relative_to(dst)).exists():
            argv += ["--tmpfs", str(site)]
    size = str(tmpfs_mb * MIB)
    argv += [
        *(["--proc", "/proc"] if fresh_proc else ["--dir", "/proc"]),
        "--dev", "/dev",
        "--size", size, "--tmpfs", "/tmp",
        "--size", size, "--tmpfs", WORKDIR,
        "--chdir", WORKDIR,
        "--remount-ro", "/",
        str(dst / "bin" / python.name) if not str(dst).startswith("/usr/") else str(python),
    ]  # fmt: skip
    return argv
