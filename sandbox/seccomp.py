"""A seccomp filter that forbids new user namespaces, for where bubblewrap's own
`--disable-userns` cannot work.

`--disable-userns` sets `user.max_user_namespaces` to 1 inside the sandbox's user namespace,
through `/proc/sys`. Docker mounts `/proc/sys` read-only in every container, so there it
fails ("cannot open /proc/sys/user/max_user_namespaces: Read-only file system"). This filter
gives the same guarantee another way: `unshare` and `clone` with CLONE_NEWUSER fail with
EPERM, and `clone3` (whose flags sit in a struct that seccomp cannot read) with ENOSYS, which
makes glibc fall back to `clone`. Syscalls of a foreign architecture (i386 `int 0x80` from
an x86_64 process) kill the process: libseccomp's default for a non-native architecture.

The program is compiled by libseccomp (`seccomp_export_bpf`), called through ctypes: it is
on every Debian system (apt depends on it), and its Python bindings are not on PyPI.
bubblewrap loads it (`--seccomp FD`) just before it executes the sandboxed interpreter.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import tempfile
from functools import lru_cache

CLONE_NEWUSER = 0x10000000
_SCMP_ACT_ALLOW = 0x7FFF0000
_SCMP_CMP_MASKED_EQ = 7


def _act_errno(code: int) -> int:
    return 0x00050000 | (code & 0xFFFF)


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int), ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


class SeccompUnavailable(RuntimeError):
    """libseccomp is missing or refused the filter."""


@lru_cache(maxsize=1)
def no_new_userns_filter() -> bytes:
    """The compiled BPF program (struct sock_filter[]) for bubblewrap's `--seccomp`."""
    name = ctypes.util.find_library("seccomp")
    if name is None:
        raise SeccompUnavailable("libseccomp is not installed (Debian: libseccomp2)")
    lib = ctypes.CDLL(name, use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(_ArgCmp)]
    lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]

    ctx = lib.seccomp_init(_SCMP_ACT_ALLOW)
    if not ctx:
        raise SeccompUnavailable("seccomp_init failed")
    try:
        newuser = (_ArgCmp * 1)(_ArgCmp(0, _SCMP_CMP_MASKED_EQ, CLONE_NEWUSER, CLONE_NEWUSER))
        # clone's flags are argument 0 on x86_64 and aarch64 (not on s390, which we do not run on)
        rules = [("unshare", errno.EPERM, newuser), ("clone", errno.EPERM, newuser), ("clone3", errno.ENOSYS, None)]
        for syscall, code, cmp in rules:
            nr = lib.seccomp_syscall_resolve_name(syscall.encode())
            if nr < 0:
                continue  # not a syscall on this architecture (clone3 before Linux 5.3's headers)
            rc = lib.seccomp_rule_add_array(ctx, _act_errno(code), nr, 0 if cmp is None else 1, cmp)
            if rc < 0:
                raise SeccompUnavailable(f"seccomp_rule_add({syscall}) failed: {os.strerror(-rc)}")
        with tempfile.TemporaryFile() as out:
            rc = lib.seccomp_export_bpf(ctx, out.fileno())
            if rc < 0:
                raise SeccompUnavailable(f"seccomp_export_bpf failed: {os.strerror(-rc)}")
            out.seek(0)
            return out.read()
    finally:
        lib.seccomp_release(ctx)


def filter_fd() -> int:
    """A pipe's read end holding the program, for one bubblewrap start (it reads to EOF).
    The caller passes it to the child and closes it after the start."""
    program = no_new_userns_filter()
    r, w = os.pipe()
    try:
        os.write(w, program)  # a few hundred bytes: far below the pipe's buffer
    finally:
        os.close(w)
    return r
