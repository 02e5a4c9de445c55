"""User namespace id maps: root inside standing for another id outside needs a writer in the
parent namespace, either a helper forked for it or (for a cell) the kernel itself."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

from nskernel import _syscalls
from nskernel.cell.forks import fork

#: (request fd, reply fd) of a parent that writes our id maps for us (a cell's kernel: a
#: helper forked from a kernel-sized process would cost milliseconds). See
#: :func:`write_maps_for`.
map_by_parent: tuple[int, int] | None = None


def ask_parent_to_map(request: int, reply: int, uid: int) -> Callable[[bool], None]:
    """The parent-side counterpart of :func:`map_writer`: once we have unshared, ask our
    parent to write the maps (:func:`write_maps_for`), and read back how that went."""
    def finish(unshared: bool) -> None:
        global map_by_parent
        map_by_parent = None  # once: a later user namespace maps itself
        try:
            os.write(request, b"y" if unshared else b"n")
            answer = os.read(reply, 64) if unshared else b"0"
        finally:
            os.close(request)
            os.close(reply)
        code = int(answer or b"1")
        if unshared and code != 0:
            raise _map_failed(os.getpid(), uid, code)
    return finish


def _map_failed(target: int, uid: int, code: int) -> _syscalls.NamespaceError:
    return _syscalls.NamespaceError(
        f"write /proc/{target}/uid_map ('0 {uid} 1')", code if code > 0 else errno.EPERM,
        f"uid {uid} must be mapped in the writer's own user namespace "
        "(see /proc/self/uid_map); map root to your own uid instead")


def write_maps_for(pid: int, uid: int, request: int, reply: int) -> None:
    """In the parent: wait until child ``pid`` says it has unshared its user namespace, map
    its root to ``uid`` (and the group alike), say how that went. Returns at once if the
    child ends, or never asks."""
    try:
        if os.read(request, 1) != b"y":
            return
        try:
            _syscalls.write_id_maps(uid, uid, pid=pid)
            code = 0
        except _syscalls.NamespaceError as exc:
            code = exc.errno or errno.EPERM
        os.write(reply, str(code).encode())
    except OSError:
        pass  # the child is gone; its end says why


def map_writer(uid: int, gid: int) -> Callable[[bool], None]:
    """Fork a helper, still privileged outside, that maps our new user namespace's root to
    ``uid``/``gid`` once we have unshared; return the function that tells it whether to.

    A process can only map its own ids itself; root mapping root-inside to "nobody" outside
    needs a writer in the parent namespace (the job newuidmap does). The helper exits with
    the errno of a failed write, so the message can say what failed.
    """
    target = os.getpid()
    read_end, write_end = os.pipe()
    helper = fork()
    if helper == 0:
        os.close(write_end)
        code = 1
        try:
            if os.read(read_end, 1) == b"y":
                _syscalls.write_id_maps(uid, gid, pid=target)
                code = 0
        except OSError as exc:
            code = exc.errno or 1
        finally:
            os._exit(code)
    os.close(read_end)

    def finish(unshared: bool) -> None:
        os.write(write_end, b"y" if unshared else b"n")
        os.close(write_end)
        _pid, status = os.waitpid(helper, 0)
        code = os.waitstatus_to_exitcode(status)
        if unshared and code != 0:
            raise _map_failed(target, uid, code)

    return finish


def id_is_mapped(outside: int) -> bool:
    """Whether uid and gid ``outside`` exist in the calling process's user namespace.

    Root on the host has every id; the root of a rootless kernel's user namespace usually
    has one (its user's), so a nested user namespace can only map to that one.
    """
    for name in ("uid_map", "gid_map"):
        with open(f"/proc/self/{name}") as handle:
            ranges = [tuple(int(word) for word in line.split()) for line in handle]
        if not any(inside <= outside < inside + count for inside, _, count in ranges):
            return False
    return True
