"""The layers of the package, read from the source with `ast` (every import, also those inside functions): the
library never imports the command-line layer `captioning.cli` nor a project script, and no captioning modules
import each other in a cycle.

Print the graph, one "module -> the package modules it imports" line per module, then the upward imports and the
cycles, of this checkout or of another one (e.g. `git worktree add /tmp/old <commit>`):

    python tests/test_layers.py
    python tests/test_layers.py /tmp/old
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "captioning"
CLI = "captioning.cli"
PROJECT_SCRIPTS = {"app", "train", "prepare_data", "bench", "tests", "conftest"}  # the repo's own non-package code


def module_name(path: Path, root: Path) -> str:
    """captioning/cli/args.py -> captioning.cli.args; captioning/cli/__init__.py -> captioning.cli."""
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules(root: Path = REPO) -> dict[str, Path]:
    """Every module of the package under root, by dotted name."""
    return {module_name(path, root): path for path in sorted((root / PACKAGE).rglob("*.py"))}


def imported_names(path: Path, name: str, modules: dict[str, Path]) -> list[tuple[str, int]]:
    """(imported module, line) for every import statement in the file, at any depth; `from x import y` counts as
    x.y where that is a module of the package, else as x."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's own package, one level up per extra dot
                package = name.split(".")[: len(name.split(".")) - node.level + is_package]
                base = ".".join([*package, *([base] if base else [])])
            for alias in node.names:
                found.append((f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base, node.lineno))
    return found


def import_graph(root: Path = REPO) -> dict[str, dict[str, int]]:
    """{module: {imported module: first line}} for every module of the package, imports of any module included."""
    modules = package_modules(root)
    graph = {}
    for name, path in modules.items():
        imports: dict[str, int] = {}
        for imported, line in imported_names(path, name, modules):
            imports.setdefault(imported, line)
        graph[name] = imports
    return graph


def is_in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def layer_violations(graph: dict[str, dict[str, int]]) -> list[str]:
    """'module:line imports X' for each import of the command-line layer from outside it, and each import of a
    project script (app.py, train.py, prepare_data.py, bench/, tests/) from anywhere in the package."""
    wrong = []
    for module, imports in graph.items():
        for imported, line in imports.items():
            if is_in(imported, CLI) and not is_in(module, CLI):
                wrong.append(f"{module}:{line} imports the command-line layer {imported}")
            if imported.split(".")[0] in PROJECT_SCRIPTS:
                wrong.append(f"{module}:{line} imports the project script {imported}")
    return wrong


def import_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """One cycle [a, b, ..., a] per group of package modules that import each other (depth-first search)."""
    edges = {module: sorted(m for m in imports if m in graph and m != module) for module, imports in graph.items()}
    state: dict[str, str] = {}  # "open" while on the search path, "done" after
    path: list[str] = []
    cycles = []

    def visit(module: str) -> None:
        state[module] = "open"
        path.append(module)
        for imported in edges[module]:
            if state.get(imported) == "open":
                cycles.append([*path[path.index(imported) :], imported])
            elif imported not in state:
                visit(imported)
        path.pop()
        state[module] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module)
    return cycles


def test_the_library_never_imports_the_command_line_layer_or_a_script():
    graph = import_graph()
    assert {"captioning.cli.args", "captioning.model", "captioning.config"} <= set(graph)  # the walk saw them
    assert "captioning.config" in graph["captioning.cli.args"]  # and reads imports
    assert layer_violations(graph) == []


def test_no_import_cycle_among_captioning_modules():
    cycles = import_cycles(import_graph())
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in cycles)


def test_the_checks_catch_a_library_module_that_imports_the_command_line(tmp_path):
    """The shape of a real mistake: a library main() importing the flags, whose helpers import the library back."""
    package = tmp_path / PACKAGE
    (package / "cli").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "cli" / "__init__.py").write_text("")
    (package / "cli" / "args.py").write_text("def load():\n    from captioning.model import Captioner\n")
    (package / "model.py").write_text("from captioning.checkpoint import read_model_dir\n")
    (package / "checkpoint.py").write_text(
        "def main():\n    from captioning import cli\n    from . import cli\n    import train\n"
    )
    graph = import_graph(tmp_path)
    assert layer_violations(graph) == [
        "captioning.checkpoint:2 imports the command-line layer captioning.cli",
        "captioning.checkpoint:4 imports the project script train",
    ]
    (package / "cli" / "__init__.py").write_text("from captioning.cli.args import load\n")  # a package importing on
    assert import_cycles(import_graph(tmp_path)) == [
        ["captioning.checkpoint", "captioning.cli", "captioning.cli.args", "captioning.model", "captioning.checkpoint"]
    ]


if __name__ == "__main__":  # python tests/test_layers.py [REPO_ROOT]: the graph of a checkout, upward imports, cycles
    import sys

    root = Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else REPO
    graph = import_graph(root)
    for module, imports in graph.items():
        print(f"{module} -> {', '.join(sorted(m for m in imports if m in graph))}")
    print("upward imports:", "; ".join(layer_violations(graph)) or "none")
    print("cycles:", "; ".join(" -> ".join(cycle) for cycle in import_cycles(graph)) or "none")
