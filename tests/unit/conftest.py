"""Unit tests: no root, no kernel, no namespace; the whole directory runs in about a second.

The integration suite's per-test leak check (a snapshot of the host's processes, mounts,
namespaces and links around each test) is for tests that make such things; these make none.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def nothing_left_by_this_test() -> Iterator[None]:
    yield
