"""A seccomp filter for isolated cells: the calls that reach past a sandbox fail with EPERM.

The list follows Docker's default profile (what it denies to containers): loading and
unloading kernel modules, kexec, reboot, swap, the clock, bpf, perf events, the kernel
keyring, file handles (open_by_handle_at walks out of any mount namespace), accounting and
quotas, other processes' memory, and making or joining namespaces and mounts (the cell's
are set up before the filter is loaded). A blocked call returns EPERM, as a permission
refusal would: programs report it and go on; nothing is killed.

libseccomp (through the pyseccomp binding) turns the names into the numbers of this
machine's architecture and compiles the BPF program, once per kernel.
"""

from __future__ import annotations

import errno
import os

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
    "ioperm", "iopl", "vm86", "vm86old",
    # ways out: file handles, other processes, namespaces and mounts
    "open_by_handle_at", "name_to_handle_at", "ptrace", "process_vm_readv",
    "process_vm_writev", "kcmp", *NAMESPACE_CALLS)


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
        try:
            rules.add_rule(pyseccomp.ERRNO(errno.EPERM), name)
        except (ValueError, RuntimeError, OSError):
            continue  # not a system call on this architecture
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


def deny_dangerous_syscalls(allow_namespaces: bool = False) -> None:
    """Load the filter into the calling process (and everything it starts from now on)."""
    _syscalls.set_no_new_privs()  # a filter may only be loaded with it (or as root outside)
    _syscalls.load_seccomp_filter(compiled_filter(allow_namespaces))
