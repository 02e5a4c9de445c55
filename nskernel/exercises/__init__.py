"""Checkers for the exercises at the end of each tutorial notebook (notebooks/NN-*.ipynb).

Each checker looks at the real thing the exercise asks the learner to make or find out — the
network lab, a namespace, a file, a process, a value a cell brought back with ``--export`` —
and prints one line: ``correct``, or ``not yet:`` and what is still wrong. It returns the
verdict as a bool, so a test (or a teacher's notebook) can use it too. A value a cell brought
back is read from the notebook by its name (the exercise says which), and is judged against
what the checker measures itself where it can, so that a number copied from the notebook's
text does not pass for one the learner's own cell found.

    from nskernel import exercises
    exercises.pid1_view()

Checkers never change what they inspect: what an exercise builds, the learner removes.
A teacher adds one the same way: a function that raises :class:`NotYet` with what is wrong,
wrapped in :func:`checker`, reading the notebook's values with :func:`answer`.
"""

from __future__ import annotations

from nskernel.exercises._check import NotYet, answer, checker  # noqa: F401 - for new checkers
from nskernel.exercises.containers import (
    bomb_stopped,
    covered_by_tmpfs,
    image_runs,
    overlay_container,
    overlay_order,
    readonly_cell,
    threads_counted,
    two_loops,
)
from nskernel.exercises.namespaces import (
    cell_interfaces,
    cgroup_namespaces,
    hostname_inside,
    landlock_read,
    queue_inside,
    sethostname_capability,
    shared_namespaces,
    uptime_command,
)
from nskernel.exercises.network import (
    cut_off,
    no_way_back,
    plain_routing,
    published_port,
    third_lan,
    two_hops,
)
from nskernel.exercises.processes import (
    orphan_adopted,
    pid1_of_unshare,
    pid1_view,
    sleeper_gone,
    stopped_by_wall_clock,
    sums_the_data,
)

__all__ = [
    "pid1_view", "sleeper_gone",                                # 01
    "two_hops", "cut_off",                                      # 02
    "covered_by_tmpfs", "readonly_cell",                        # 03
    "hostname_inside", "queue_inside",                          # 04
    "pid1_of_unshare", "orphan_adopted",                        # 05
    "sums_the_data", "stopped_by_wall_clock",                   # 06
    "third_lan", "no_way_back",                                 # 07
    "cell_interfaces", "shared_namespaces",                     # 08
    "uptime_command", "cgroup_namespaces",                      # 09
    "sethostname_capability", "landlock_read",                  # 10
    "published_port", "plain_routing",                          # 11
    "image_runs", "overlay_order",                              # 12
    "two_loops", "threads_counted",                             # 13
    "bomb_stopped", "overlay_container",                        # 14
]
