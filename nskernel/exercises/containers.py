"""Checkers of the exercises of notebooks 3, 12, 13 and 14: mounts, images and overlays,
cgroups, the capstone's container."""

from __future__ import annotations

import errno
import os
import subprocess

from nskernel.exercises._check import NotYet, answer, checker


# ---------------------------------------------------------------------------- 03
@checker
def covered_by_tmpfs(path: str = "/tmp/covered", listing: str = "/tmp/listing-inside") -> None:
    """03: a tmpfs mounted over ``path`` in a ``%%isolate --mount`` cell, its listing there
    saved to ``listing``; the kernel still sees the files below."""
    if not os.path.isdir(path):
        raise NotYet(f"no {path}: run the cell above that makes it")
    if os.path.ismount(path):
        raise NotYet(f"{path} is a mount point in the kernel: mount it in a %%isolate --mount "
                     f"cell, not here (umount {path})")
    below = sorted(os.listdir(path))
    if not below:
        raise NotYet(f"the kernel's {path} is empty: run the cell above that fills it")
    try:
        inside = open(listing).read().split()
    except FileNotFoundError:
        raise NotYet(f"no {listing} yet: save `ls {path}` there from inside the cell") from None
    if set(inside) & set(below):
        raise NotYet(f"{listing} shows the files below the mount ({below[0]}): list {path} "
                     "after mounting the tmpfs over it")


@checker
def readonly_cell(error_name: str = "etc_error", file_name: str = "tmp_file") -> None:
    """03: in a ``%%isolate --pid --readonly`` cell, the error a write to /etc met and the
    path of a file written in /tmp, both exported."""
    etc_error = answer(error_name, f"export the strerror of a write to /etc as {error_name}")
    tmp_file = answer(file_name, f"export the path of the file you wrote in /tmp as {file_name}")
    if etc_error != os.strerror(errno.EROFS):
        raise NotYet(f"`{error_name}` is {etc_error!r}: was the cell --readonly, and is it the "
                     "error's strerror?")
    if not isinstance(tmp_file, str) or not tmp_file.startswith("/tmp/"):
        raise NotYet(f"`{file_name}` is {tmp_file!r}, not a path in /tmp")
    if os.path.exists(tmp_file):
        raise NotYet(f"{tmp_file} is in the kernel's /tmp: write it from the --readonly cell, "
                     "whose /tmp is a fresh one of its own")


# ---------------------------------------------------------------------------- 12
@checker
def image_runs(root: str = "/tmp/tiny-root", made: str = "/made-inside") -> None:
    """12: the image at ``root`` runs its own ``mkdir`` and ``echo``, and holds ``made``,
    a directory made from inside it."""
    for program in ("mkdir", "echo"):
        if not os.path.exists(f"{root}/bin/{program}"):
            raise NotYet(f"the image has no /bin/{program} yet (copy_with_libraries)")
    run = subprocess.run(["chroot", root, "/bin/echo", "ok"], capture_output=True, text=True)
    if run.stdout.strip() != "ok":
        raise NotYet(f"the image's /bin/echo does not run: {run.stderr.strip()[:80]}")
    if not os.path.isdir(root + made):
        raise NotYet(f"no {made} in the image yet: make it from inside, after pivot_root, "
                     "with the image's own mkdir")


@checker
def overlay_order(name: str = "read_from", top: str = "/tmp/layers/top",
                  base: str = "/tmp/layers/base", file: str = "which") -> None:
    """12: what ``file`` reads in an overlay of two lower layers, ``lowerdir=top:base``."""
    try:
        contents = {layer: open(f"{layer}/{file}").read().strip() for layer in (top, base)}
    except FileNotFoundError as error:
        raise NotYet(f"no {error.filename} yet: give both layers a {file} file") from None
    if contents[top] == contents[base]:
        raise NotYet(f"both layers' {file} say {contents[top]!r}: make them differ")
    given = answer(name, f"export what merged/{file} reads as {name}")
    if str(given).strip() == contents[base]:
        raise NotYet(f"that is {base}'s: was lowerdir {top}:{base}, and read through merged?")
    if str(given).strip() != contents[top]:
        raise NotYet(f"`{name}` is {given!r}: neither layer's {file}")


# ---------------------------------------------------------------------------- 13
@checker
def two_loops(name: str = "each") -> None:
    """13: the CPU seconds each of two busy loops got in one second, both in one cgroup
    held to half a CPU."""
    given = answer(name, f"set {name} to the two loops' CPU seconds, a list of two numbers")
    if not (isinstance(given, (list, tuple)) and len(given) == 2
            and all(isinstance(x, (int, float)) for x in given)):
        raise NotYet(f"`{name}` must be a list of two numbers")
    if min(given) <= 0:
        raise NotYet("one loop got no CPU at all: did both run?")
    if sum(given) > 0.65:
        raise NotYet(f"together they used {sum(given):.2f} s in one second, more than half a "
                     "CPU: were both in the half-a-CPU cgroup, and did their seconds overlap "
                     "(start both, then let them spin)?")


def _own_cgroup_children(name: str) -> list[str]:
    from nskernel.locks import cgroups

    found = []
    for hierarchy in cgroups.hierarchies():
        if os.path.isdir(os.path.join(hierarchy.own, name)):
            found.append(os.path.join(hierarchy.own, name))
    return found


@checker
def threads_counted(name: str = "threads_started", pids_max: int = 4,
                    cgroup: str = "threads") -> None:
    """13: how many threads one process started in a cgroup with ``pids.max`` ``pids_max``;
    the cgroup removed afterwards."""
    given = answer(name, f"set {name} to the number of threads the process started")
    if given != pids_max - 1:
        raise NotYet(f"`{name}` is {given!r}: with pids.max {pids_max}, count what the process "
                     "itself takes, and what each thread does")
    left = _own_cgroup_children(cgroup)
    if left:
        raise NotYet(f"{left[0]} is still there: rmdir it once its process has ended")


# ---------------------------------------------------------------------------- 14
@checker
def bomb_stopped(name: str = "bomb_output", cgroup: str = "my-container") -> None:
    """14: the output of the image's sh starting processes in run() with a small ``pids``
    limit: a fork refused, and the container's cgroups removed."""
    output = answer(name, f"set {name} to the text run() returned")
    if "fork" not in str(output).lower():
        raise NotYet(f"no refused fork in `{name}`: start more processes than the pids limit "
                     "allows")
    left = _own_cgroup_children(cgroup)
    if left:
        raise NotYet(f"{left[0]} is still there: run() removes it when the container ends")


@checker
def overlay_container(image: str = "/tmp/box-image", upper: str = "/tmp/box-layers/upper",
                      file: str = "note") -> None:
    """14: the container ran on an overlay of the image: the ``file`` it wrote at its root
    is in the upper layer, not in the image."""
    if os.path.exists(f"{image}/{file}"):
        raise NotYet(f"the image itself has /{file}: the container wrote to the bare image "
                     f"(rm {image}/{file}, and run it on the overlay's merged directory)")
    if not os.path.exists(f"{upper}/{file}"):
        raise NotYet(f"no {file} in {upper} yet: let the container write /{file}")
