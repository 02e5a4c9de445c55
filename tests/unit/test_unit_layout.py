"""The package's layout holds: layers import only downwards, no import cycle (lazy imports
inside functions count too), no module over 400 lines, and the supervisor, which runs in a
site-less interpreter, imports only the standard library and its few low modules.

The graph is read from the source (ast), not by importing, so every ``import`` counts,
wherever it sits. The checker is tried on a planted bad tree too, so that it can fail.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "nskernel"

#: Lowest first. A module may import its own layer and the ones below, never one above.
#: The low layer: the only raw syscalls, the values a cell or kernel is asked for
#: (isolation, limits), who owns what (owners), tables (display), and waiting for children.
LAYERS = [
    ("low", ["_syscalls", "owners", "display", "limits", "isolation", "children"]),
    ("locks", ["locks"]),
    ("cell", ["cell"]),
    ("netlab", ["netlab"]),
    ("magics", ["magics"]),
    ("kernel", ["kernel"]),
    ("entry points", ["__init__", "__main__", "launch"]),
    ("tutorial", ["exercises"]),  # the notebooks' checkers, on the public API
]

#: What the supervisor's bare ``python -S`` interpreter may load of ours.
SUPERVISOR_MAY_IMPORT = {"nskernel", "nskernel.children", "nskernel.kernel",
                         "nskernel.kernel.relay"}
#: What the supervisor, alive as long as its kernel, does without: each costs it memory for
#: that whole life (ctypes with nskernel._syscalls ~0.7 MB, signal's enums ~0.4 MB).
SUPERVISOR_DOES_WITHOUT = {"ctypes", "signal", "enum", "re", "socket", "typing"}

MAX_LINES = 400


def module_names(root: Path) -> dict[str, Path]:
    """Dotted name of every module under ``root`` (a package directory)."""
    names = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (anywhere in its body)."""
    modules = module_names(root)
    top = root.name
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")
                    anchor = anchor[:len(anchor) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    targets.append(full if full in modules else base)
            for target in targets:
                if target == top or target.startswith(top + "."):
                    while target not in modules:  # an attribute of a module
                        target = target.rpartition(".")[0]
                    if target != name:
                        graph[name].add(target)
    return graph


def layer_of(module: str) -> int:
    parts = module.split(".")[1:] or ["__init__"]
    for rank, (_label, members) in enumerate(LAYERS):
        if parts[0] in members:
            return rank
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def upward_arrows(graph: dict[str, set[str]]) -> list[str]:
    return sorted(f"{a} -> {b} ({LAYERS[layer_of(a)][0]} imports {LAYERS[layer_of(b)][0]})"
                  for a, targets in graph.items() for b in targets
                  if layer_of(b) > layer_of(a))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle found by a depth-first walk (one per back edge)."""
    found: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                found.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_no_arrow_runs_back_up() -> None:
    assert upward_arrows(import_graph(PACKAGE)) == []


def test_no_import_cycle() -> None:
    assert cycles(import_graph(PACKAGE)) == []


def test_no_module_over_400_lines() -> None:
    long = {str(path.relative_to(PACKAGE.parent)): lines
            for path in PACKAGE.rglob("*.py")
            if (lines := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}


def test_the_supervisor_needs_only_its_low_modules() -> None:
    """Run as the launcher runs it: a site-less interpreter (see kernel.supervisor.command)."""
    loaded = set(subprocess.run(
        [sys.executable, "-S", "-c", "import sys; from nskernel.kernel import supervisor; "
         "print(' '.join(sys.modules))"],
        cwd=PACKAGE.parent, capture_output=True, text=True, check=True).stdout.split())
    ours = {name for name in loaded if name.startswith("nskernel")}
    assert ours == SUPERVISOR_MAY_IMPORT | {"nskernel.kernel.supervisor"}
    assert loaded & SUPERVISOR_DOES_WITHOUT == set()


def test_every_subpackage_is_packaged() -> None:
    text = (PACKAGE.parent / "pyproject.toml").read_text()
    for init in PACKAGE.rglob("__init__.py"):
        dotted = ".".join(init.parent.relative_to(PACKAGE.parent).parts)
        assert f'"{dotted}"' in text, f"{dotted} missing from [tool.setuptools] packages"


def _plant(tmp_path: Path, files: dict[str, str]) -> Path:
    root = tmp_path / "nskernel"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_checker_sees_a_planted_upward_import(tmp_path: Path) -> None:
    """A lock importing the cell, from inside a function: caught, lazy or not."""
    root = _plant(tmp_path, {
        "__init__.py": "", "locks/__init__.py": "", "cell/__init__.py": "",
        "cell/runner.py": "from nskernel.locks import cgroups\n",
        "locks/cgroups.py": "def f():\n    from nskernel.cell.runner import run\n",
    })
    graph = import_graph(root)
    assert upward_arrows(graph) == [
        "nskernel.locks.cgroups -> nskernel.cell.runner (locks imports cell)"]
    assert cycles(graph) == [["nskernel.cell.runner", "nskernel.locks.cgroups",
                              "nskernel.cell.runner"]]


def test_the_checker_sees_a_planted_cycle_within_a_layer(tmp_path: Path) -> None:
    root = _plant(tmp_path, {
        "__init__.py": "", "kernel/__init__.py": "",
        "kernel/kernelspec.py": "from . import provisioner\n",
        "kernel/provisioner.py": "def f():\n    from nskernel.kernel import kernelspec\n",
    })
    graph = import_graph(root)
    assert upward_arrows(graph) == []
    assert cycles(graph) == [["nskernel.kernel.kernelspec", "nskernel.kernel.provisioner",
                              "nskernel.kernel.kernelspec"]]


if __name__ == "__main__":  # the graph, for a reader: python tests/unit/test_unit_layout.py
    for module, targets in sorted(import_graph(PACKAGE).items()):
        print(module, "->", ", ".join(sorted(targets)) or "-", file=sys.stdout)
