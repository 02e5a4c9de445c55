"""Who a root Jupyter's kernel is on the host: an id of its own, for its life alone.

Root inside the kernel's user namespace must stand for someone outside. Were every kernel
``nobody``, each could read, overwrite and delete what another left where both may write
(a 0600 file in a 0700 directory included). So each kernel of a root Jupyter gets a uid
(and the same gid) of its own from a reserved range, as ioi/isolate gives each sandbox its
own uid and systemd's ``DynamicUser=`` each service: no user of the machine has it, no
other live kernel has it, and whatever a kernel leaves on the host can be found by it.

The range defaults to 64Ki ids from 0x70000000 (1879048192), which systemd's table of
ranges leaves unused (above the container ranges, below the foreign range);
``NSKERNEL_UID_RANGE=FIRST-LAST`` moves it. An id is taken by an exclusive ``flock`` on a
file named after it in :data:`LOCK_DIR`, held by the kernel's supervisor for the kernel's
life (the lock goes when the last holder of the descriptor dies, however it dies). Ids in
the machine's user and group databases and in ``/etc/subuid`` and ``/etc/subgid`` are
never taken.
"""

from __future__ import annotations

import fcntl
import grp
import os
import pwd
import random

DEFAULT_RANGE = (0x70000000, 0x7000FFFF)
RANGE_ENV = "NSKERNEL_UID_RANGE"
#: On the host's /run (a tmpfs: emptied at boot, when no kernel can be alive).
LOCK_DIR = "/run/nskernel/kernel-ids"
_TRIES = 64


class IdentityError(RuntimeError):
    """No id is free; the message is one line."""


def id_range() -> tuple[int, int]:
    """The reserved range, from the environment or the default."""
    text = os.environ.get(RANGE_ENV)
    if not text:
        return DEFAULT_RANGE
    try:
        first, last = (int(part) for part in text.split("-"))
    except ValueError:
        raise IdentityError(f"{RANGE_ENV}={text!r}: give it as FIRST-LAST, e.g. "
                            f"{DEFAULT_RANGE[0]}-{DEFAULT_RANGE[1]}") from None
    if not 0 < first <= last < 0xFFFFFFFF or (first <= 65535 and last >= 65534):
        raise IdentityError(f"{RANGE_ENV}={text!r}: a range of ids between 1 and 4294967294 "
                            "that leaves out nobody (65534) and 65535")
    return first, last


def allocate() -> tuple[int, int]:
    """Take a free id of the range: (id, the locked descriptor that holds it). Keep the
    descriptor open for as long as the kernel lives (it is close-on-exec: pass it on
    with ``os.set_inheritable``)."""
    first, last = id_range()
    os.makedirs(LOCK_DIR, mode=0o700, exist_ok=True)
    taken = _subordinate_ids()
    for _ in range(_TRIES):
        candidate = random.randint(first, last)
        if _known(candidate) or any(low <= candidate < high for low, high in taken):
            continue
        fd = os.open(os.path.join(LOCK_DIR, str(candidate)),
                     os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return candidate, fd
    raise IdentityError(f"no free kernel id in {first}-{last} after {_TRIES} tries: make the "
                        f"range bigger ({RANGE_ENV}=FIRST-LAST)")


def in_use() -> set[int]:
    """The ids that live kernels hold now."""
    held = set()
    try:
        names = os.listdir(LOCK_DIR)
    except FileNotFoundError:
        return held
    for name in names:
        if not name.isdigit():
            continue
        try:
            fd = os.open(os.path.join(LOCK_DIR, name), os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            held.add(int(name))
        finally:
            os.close(fd)
    return held


def _known(candidate: int) -> bool:
    """Whether the machine's user or group database has this id."""
    for lookup in (pwd.getpwuid, grp.getgrgid):
        try:
            lookup(candidate)
            return True
        except KeyError:
            pass
    return False


def _subordinate_ids() -> list[tuple[int, int]]:
    """[first, end) ranges that /etc/subuid and /etc/subgid give users' own namespaces."""
    ranges = []
    for path in ("/etc/subuid", "/etc/subgid"):
        try:
            with open(path) as handle:
                lines = handle.read().splitlines()
        except OSError:
            continue
        for line in lines:
            fields = line.split(":")
            if len(fields) == 3 and fields[1].isdigit() and fields[2].isdigit():
                ranges.append((int(fields[1]), int(fields[1]) + int(fields[2])))
    return ranges
