"""Interface names and netlink errors as the lab says them: a name checked against IFNAMSIZ
before netlink sees it, and a failed step in one line."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from nskernel.netlab import _rtnl
from nskernel.netlab.netns import (
    Endpoint,
    LabError,
)

IFNAMSIZ = 15


IFNAME_TRIES = 64


def check_ifname(name: str) -> str:
    size = len(name.encode())
    if size > IFNAMSIZ or not size:
        raise LabError(f"interface name {name!r} is {size} bytes; Linux allows 1 to {IFNAMSIZ}:"
                       " use shorter namespace names or give the interface a name")
    return name


def _endpoint(value: str | Endpoint) -> Endpoint:
    return value if isinstance(value, Endpoint) else Endpoint.parse(value)


def _new_link_index(reply: Any, ipr: Any, name: str) -> int:
    """The index of a link just made. Linux echoes the new link (NLM_F_ECHO) since 6.3;
    before that (Debian 12's 6.1) the reply is a bare acknowledgement: then ask by name."""
    try:
        return int(reply[0]["index"])
    except (KeyError, IndexError, TypeError):
        pass
    found = _rtnl.interface_index(ipr, name)
    if found is None:
        raise LabError(f"the new interface {name!r} is gone already")
    return found


def _netlink(step: str, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return function(*args, **kwargs)
    except NetlinkError as exc:
        raise _lab_error(step, exc) from None


def _lab_error(step: str, exc: NetlinkError) -> LabError:
    hint = {errno.EEXIST: "it exists already", errno.EPERM: "needs root (or a user "
            "namespace that owns the network namespace)", errno.ENETUNREACH:
            "the gateway is not on a connected network: give an address in its subnet "
            "to an interface first", errno.EADDRNOTAVAIL: "address not available",
            errno.EACCES: "IPv6 is off in that namespace (make it with %netns add --ipv6)"}
    return LabError(f"{step}: {hint.get(exc.code) or os.strerror(exc.code)}")
