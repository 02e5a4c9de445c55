"""What a view of the host's files must show again, and what it must hide beside the rest.

Noted in the parent (the kernel, once per change), before it forks a cell: Python's own
directories, which a scratch tmpfs or a --visible-only view would otherwise cover, and what
of /etc only root may read. Walking ``sys.modules`` or /etc in a fresh fork would touch
and copy the kernel's memory, and cost milliseconds per cell.
"""

from __future__ import annotations

import os
import stat
import sys

#: Python's directories, as :func:`note_python_directories` found them in the parent, the
#: directories it was asked to show besides, and what it looked at then; and, narrower, the
#: directories and files that hold Python's code alone (for a --visible-only view).
_python_directories: tuple[str, ...] = ()
_also_directories: tuple[str, ...] = ()
_python_code: tuple[str, ...] = ()
_noted_for: tuple = ()
#: sys.path entries that hold installed code, not a project's other files.
_SITE_NAMES = ("site-packages", "dist-packages", "lib-dynload")


def note_python_directories(*also: str) -> None:
    """Note, before forking, where Python finds its code: ``sys.path``, the prefix and the
    packages imported so far (editable installs live outside ``sys.path``); and ``also``
    (the notebook's directory, for a kernel).

    For a --visible-only view, only what holds code: the prefixes, the standard library,
    site-packages, and each imported package's own directory (or module's file). Not the
    other ``sys.path`` entries: an editable install puts a whole repository there, and a
    course's or a project's directory may hold what the view is to keep out.

    Done in the parent: walking ``sys.modules`` in a fresh fork touches hundreds of objects,
    and every touched page of the kernel's memory is copied (milliseconds per cell)."""
    global _python_directories, _also_directories, _python_code, _noted_for, _root_only
    seen = (len(sys.modules), tuple(sys.path), also)
    if seen == _noted_for:
        return  # nothing imported or added since the last cell
    _noted_for = seen
    files = [(module, module.__dict__.get("__file__"))
             for name, module in list(sys.modules.items())
             if "." not in name and isinstance(getattr(module, "__dict__", None), dict)]
    files = [(module, path) for module, path in files if isinstance(path, str)]
    directories = {*sys.path, sys.prefix, *(os.path.dirname(path) for _module, path in files)}
    _python_directories = tuple(sorted(d for d in directories if d))
    _also_directories = tuple(sorted(d for d in also if d))
    sites = [path for path in sys.path if os.path.basename(path) in _SITE_NAMES]
    code = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.__file__), *sites}
    code |= {os.path.dirname(path) if hasattr(module, "__path__") else path
             for module, path in files
             if not os.path.join(path, "").startswith(tuple(os.path.join(d, "") for d in code))}
    _python_code = tuple(sorted(path for path in code if os.path.exists(path)))
    if os.geteuid() == 0 and not _root_only:
        _root_only = tuple(_find_root_only())


def python_paths_below(scratch: list[str], code_only: bool = False) -> list[str]:
    """The noted directories that lie in or below one of ``scratch`` (compared as strings
    first: resolving every path would cost more than the rest of the view); ``code_only``:
    of Python's, only those that hold code (and files).

    A scratch directory itself is one only when it was asked for (the notebook's
    directory): on ``sys.path`` it is the directory the kernel started in (``python -m``
    puts it there), and a fresh /tmp matters more to a cell than the kernel's files in it.
    """
    below = tuple({os.path.join(path, "") for d in scratch for path in (d, os.path.realpath(d))})
    fresh = {os.path.realpath(d) for d in scratch}
    python = _python_code if code_only else _python_directories
    found = {os.path.realpath(path) for path in (*python, *_also_directories)
             if os.path.join(path, "").startswith(below)
             and (os.path.isdir(path) or code_only and os.path.isfile(path))}
    asked = {os.path.realpath(path) for path in _also_directories}
    return sorted(path for path in found if path not in fresh or path in asked)


#: What of /etc only root may read, as :func:`note_python_directories` found it (as root).
_root_only: tuple[str, ...] = ()


def root_only_in_etc() -> tuple[str, ...]:
    """Files and directories of /etc that others may not read (shadow, private keys), for
    a caller that could read them: real root. Others are kept out by their modes."""
    return _root_only if os.geteuid() == 0 else ()


def _find_root_only(directory: str = "/etc") -> list[str]:
    found = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return found
    for entry in entries:
        try:
            mode = entry.stat(follow_symlinks=False).st_mode
        except OSError:
            continue
        if stat.S_ISDIR(mode):
            if mode & (stat.S_IROTH | stat.S_IXOTH) != stat.S_IROTH | stat.S_IXOTH:
                found.append(entry.path)
            else:
                found += _find_root_only(entry.path)
        elif stat.S_ISREG(mode) and not mode & stat.S_IROTH:
            found.append(entry.path)
    return found
