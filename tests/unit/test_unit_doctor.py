"""nskernel doctor's verdict from its checks."""

from __future__ import annotations

from nskernel.doctor import Check, report
from nskernel.isolation import NAMESPACES


def checks(failing: str | None) -> list[Check]:
    names = ["user", *NAMESPACES, "init"]
    return [Check(name, name != failing, "refused" if name == failing else "ok")
            for name in names]


def test_everything_ok_means_the_kernel_can_start():
    assert report(checks(None)).endswith("The Isolated Python kernel can start here.")


def test_no_user_namespaces_means_no_kernel_even_as_root():
    """The kernel always has a user namespace of its own."""
    text = report(checks("user"))
    assert "NO  user   refused" in text
    assert text.endswith("cannot start here until the above is fixed.")
