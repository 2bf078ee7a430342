"""The Python runtime a sandbox binds read-only: the interpreter's own prefix, or a staged
copy of it where the sandbox uid could not read the original."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import sys
import sysconfig
import tempfile
import threading
from pathlib import Path

from sandbox.errors import SandboxUnavailable

# Stdlib parts untrusted code never needs; left out of a staged runtime copy.
_STAGE_SKIP = {"site-packages", "test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "__phello__"}
_STAGE_LOCK = threading.Lock()


def runtime_bind(python: Path, cache_dir: Path) -> tuple[Path, Path]:
    """(host source, sandbox destination) of the Python prefix to bind, staging a copy if needed."""
    prefix = python.parent.parent
    if os.geteuid() != 0 or _world_accessible(prefix / "lib"):
        return (prefix, prefix)
    # The runtime lives where the sandbox uid cannot read it (e.g. under /root with
    # pyenv). Stage a world-readable copy once, hard-linked where possible.
    return (stage_runtime(python, prefix, cache_dir), prefix)


def stage_runtime(python: Path, prefix: Path, cache_dir: Path) -> Path:
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    digest = hashlib.sha256(f"{prefix}\0{sys.version}".encode()).hexdigest()[:12]
    tag = f"python{version}-{digest}"
    dest = cache_dir / tag
    with _STAGE_LOCK:
        if (dest / ".complete").exists():
            return dest
        cache_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(cache_dir, 0o755)
        tmp = Path(tempfile.mkdtemp(dir=cache_dir))
        os.chmod(tmp, 0o755)
        (tmp / "bin").mkdir(mode=0o755)
        _link_or_copy(python, tmp / "bin" / python.name)
        (tmp / "lib").mkdir(mode=0o755)
        libdir = prefix / "lib"
        for entry in libdir.iterdir():
            if entry.name.startswith("libpython") and entry.is_file():
                _link_or_copy(entry, tmp / "lib" / entry.name)
        stdlib = Path(sysconfig.get_paths()["stdlib"])
        if stdlib.parent != libdir:
            raise SandboxUnavailable(f"unexpected Python layout: stdlib {stdlib} not under {libdir}")
        shutil.copytree(
            stdlib,
            tmp / "lib" / stdlib.name,
            ignore=lambda _d, names: [n for n in names if n in _STAGE_SKIP or n.startswith("config-")],
            copy_function=_link_or_copy,
            symlinks=True,
        )
        for root, dirs, _files in os.walk(tmp):
            for d in dirs:
                os.chmod(os.path.join(root, d), 0o755)
        (tmp / ".complete").touch()
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
        return dest


def _world_accessible(path: Path) -> bool:
    """True when every directory up to `path` is traversable by any uid and `path` is readable."""
    p = path
    while True:
        try:
            mode = p.stat().st_mode
        except OSError:
            return False
        if not mode & stat.S_IXOTH:
            return False
        if p == p.parent:
            return True
        p = p.parent


def _link_or_copy(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    src_path = Path(src)
    if src_path.stat().st_mode & stat.S_IROTH:
        try:
            os.link(src_path, dst)
            return
        except OSError:
            pass
    shutil.copy2(src_path, dst)
    os.chmod(dst, 0o755 if os.access(src_path, os.X_OK) else 0o644)
