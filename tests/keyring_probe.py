"""Start a kernel from a session that holds a key, as a Jupyter started from a login session
does, run cells in it, and print as JSON what came back and whether the key is unchanged.

    python keyring_probe.py KERNEL_NAME CODE...

The probe joins a named session keyring of its own and puts a "user" key with a random secret
in it, so it works the same as root and as another user, and leaves nothing behind: the
keyring and its key go when the probe and its kernel end. The cells get ``KEY_ID``,
``KEY_DESCRIPTION`` and ``KEYRING_NAME`` (a first cell defines them), never the secret.
"""

from __future__ import annotations

import ctypes
import dataclasses
import errno
import json
import platform
import secrets
import sys

import kernels

#: (keyctl, add_key) system call numbers.
CALLS = {"x86_64": (250, 248), "aarch64": (219, 217)}[platform.machine()]
KEYCTL_JOIN_SESSION_KEYRING, KEYCTL_READ = 1, 11
KEY_SPEC_SESSION_KEYRING = -3

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def _checked(result: int, what: str) -> int:
    if result < 0:
        number = ctypes.get_errno()
        raise OSError(number, f"{what}: {errno.errorcode.get(number, number)}")
    return result


def read_key(key: int) -> bytes:
    buffer = ctypes.create_string_buffer(4096)
    size = _checked(libc.syscall(CALLS[0], ctypes.c_long(KEYCTL_READ), ctypes.c_long(key),
                                 buffer, ctypes.c_long(len(buffer))), "read the key")
    return buffer.raw[:size]


def main(argv: list[str]) -> int:
    name, *codes = argv
    ring = f"nskernel-test-{secrets.token_hex(6)}"
    _checked(libc.syscall(CALLS[0], ctypes.c_long(KEYCTL_JOIN_SESSION_KEYRING), ring.encode()),
             "join a session keyring")
    secret = secrets.token_hex(16).encode()
    description = b"nskernel-test-key"
    key = _checked(libc.syscall(CALLS[1], b"user", description, secret,
                                ctypes.c_size_t(len(secret)),
                                ctypes.c_long(KEY_SPEC_SESSION_KEYRING)), "add a key")
    manager, client = kernels.start(name)
    try:
        kernels.execute(client, f"KEY_ID = {key}\nKEY_DESCRIPTION = {description!r}\n"
                                f"KEYRING_NAME = {ring!r}\n")
        results = [dataclasses.asdict(kernels.execute(client, code)) for code in codes]
    finally:
        kernels.stop(manager, client)
    print(json.dumps({"results": results, "key_id": key,
                      "secret_seen": secret.decode() in json.dumps(results),
                      "key_unchanged": read_key(key) == secret}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
