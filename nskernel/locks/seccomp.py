"""A seccomp filter for isolated cells: the calls that reach past a sandbox fail with EPERM.

The list follows Docker's default profile (what it denies to containers): loading and
unloading kernel modules, kexec, reboot, swap, the clock, bpf, perf events, the kernel
keyring, file handles (open_by_handle_at walks out of any mount namespace), accounting and
quotas, other processes' memory, io_uring (whose operations no filter sees), and making or
joining namespaces and mounts (the cell's are set up before the filter is loaded): unshare,
setns, and clone with any CLONE_NEW* flag, while clone without them (fork, threads,
subprocesses) goes through. clone3 passes its flags in memory, where a filter cannot read
them: it gets ENOSYS, and the C library falls back to clone (as under Docker). A blocked
call returns EPERM, as a permission refusal would: programs report it and go on; nothing
is killed.

libseccomp (through the pyseccomp binding) turns the names into the numbers of this
machine's architecture and compiles the BPF program, once per kernel.
"""

from __future__ import annotations

import errno
import functools
import os
import platform

import pyseccomp

from nskernel import _syscalls

#: Making or joining namespaces, and mounting: denied to a cell (its own are made before the
#: filter), left to a kernel, whose own user namespace keeps them from the host's.
NAMESPACE_CALLS = ("unshare", "setns", "mount", "umount", "umount2", "pivot_root", "fsopen",
                   "fsmount", "fsconfig", "move_mount", "open_tree", "mount_setattr")
DENIED = (
    # kernel modules, kexec, reboot, swap
    "init_module", "finit_module", "delete_module", "create_module", "query_module",
    "get_kernel_syms", "kexec_load", "kexec_file_load", "reboot", "swapon", "swapoff",
    # the machine's clock and accounting
    "settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "stime", "acct",
    "quotactl", "quotactl_fd", "lookup_dcookie", "nfsservctl", "uselib", "ustat", "sysfs",
    "_sysctl",
    # kernel facilities a sandbox has no use for
    "bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key",
    "ioperm", "iopl", "vm86", "vm86old", "io_uring_setup", "io_uring_enter",
    "io_uring_register",
    # ways out: file handles, other processes, namespaces and mounts
    "open_by_handle_at", "name_to_handle_at", "ptrace", "process_vm_readv",
    "process_vm_writev", "kcmp", *NAMESPACE_CALLS)


#: Memory that no rlimit counts and only a cgroup (which can only kill) would: the pages of a
#: memfd written to, and SysV shared memory segments, which stay when they are unmapped.
#: Refused under a memory limit (shared mappings count in RLIMIT_AS, tmpfs files in their
#: tmpfs's size), as EPERM.
UNACCOUNTED_MEMORY = ("memfd_create", "shmget")


#: clone's flags that make namespaces: a cell's clone with any of them is refused.
CLONE_NAMESPACE_FLAGS = (_syscalls.CLONE_NEWNS, _syscalls.CLONE_NEWCGROUP,
                         _syscalls.CLONE_NEWUTS, _syscalls.CLONE_NEWIPC,
                         _syscalls.CLONE_NEWUSER, _syscalls.CLONE_NEWPID,
                         _syscalls.CLONE_NEWNET)
#: Which argument of clone holds its flags (s390 swaps the first two).
_CLONE_FLAGS_ARGUMENT = 1 if platform.machine().startswith("s390") else 0


def compiled_filter(allow_namespaces: bool = False) -> bytes:
    """The filter as a BPF program for this machine, built once per variant, in the kernel:
    building it in every cell's fresh fork would cost milliseconds."""
    if allow_namespaces not in _compiled:
        _compiled[allow_namespaces] = _compile(allow_namespaces)
    return _compiled[allow_namespaces]


#: The compiled programs, by whether namespace calls are allowed (a dict, not functools'
#: cache, which tells compiled_filter() and compiled_filter(False) apart).
_compiled: dict[bool, bytes] = {}


def _compile(allow_namespaces: bool) -> bytes:
    rules = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    for name in DENIED:
        if allow_namespaces and name in NAMESPACE_CALLS:
            continue
        _add(rules, errno.EPERM, name)
    if not allow_namespaces:
        for flag in CLONE_NAMESPACE_FLAGS:  # one rule per flag: any of them is refused
            _add(rules, errno.EPERM, "clone",
                 pyseccomp.Arg(_CLONE_FLAGS_ARGUMENT, pyseccomp.MASKED_EQ, flag, flag))
        _add(rules, errno.ENOSYS, "clone3")
    return _exported(rules)


def _exported(rules: pyseccomp.SyscallFilter) -> bytes:
    """The rules as a BPF program (libseccomp writes it to a file descriptor)."""
    reader, writer = os.pipe()
    try:
        with open(writer, "wb", closefd=False) as sink:
            rules.export_bpf(sink)
        os.close(writer)
        writer = -1
        with open(reader, "rb", closefd=False) as source:
            return source.read()
    finally:
        os.close(reader)
        if writer >= 0:
            os.close(writer)


def _add(rules: pyseccomp.SyscallFilter, error: int, name: str, *args: pyseccomp.Arg) -> None:
    """Have ``name`` (where ``args`` hold) fail with ``error``."""
    try:
        rules.add_rule(pyseccomp.ERRNO(error), name, *args)
    except (ValueError, RuntimeError, OSError):
        pass  # not a system call on this architecture


@functools.cache
def memory_filter() -> bytes:
    """The filter that refuses UNACCOUNTED_MEMORY, built once per process (in the kernel, not
    in each cell's fork)."""
    rules = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
    for name in UNACCOUNTED_MEMORY:
        _add(rules, errno.EPERM, name)
    return _exported(rules)


def deny_unaccounted_memory() -> None:
    """Load :func:`memory_filter` into the calling process, which has no_new_privs already
    (a kernel behind its walls, a cell's body)."""
    _syscalls.load_seccomp_filter(memory_filter())


def deny_dangerous_syscalls(allow_namespaces: bool = False) -> None:
    """Load the filter into the calling process (and everything it starts from now on)."""
    _syscalls.set_no_new_privs()  # a filter may only be loaded with it (or as root outside)
    _syscalls.load_seccomp_filter(compiled_filter(allow_namespaces))
