"""Check the package layout: import cycles, the layering of ../shared/DESIGN.md, imports hidden in functions, file sizes.

    python scripts/check_layout.py [--lines]

Reads the source with ``ast`` (nothing is imported). Exit status 1 when a rule is broken; ``--lines`` also lists
the line count of every file. ``tests/test_layout.py`` runs the same checks in the test suite (and so in CI).

Rules:

* no import cycle among the modules of ``speciesvi`` (imports inside functions count);
* no import of a ``speciesvi`` module inside a function (the way cycles get hidden);
* layering: ``pp`` imports no torch and nothing of ``model``/``module``/``train``/``tl``/``pl``; ``module`` and
  ``train`` know nothing of ``model``, ``tl``, ``pl`` or AnnData; ``tl`` does not import ``model`` or ``pl``;
  ``pl`` draws from results, so it imports neither torch nor ``model``/``module``/``train``; ``datasets`` stands
  alone;
* no file over :data:`MAX_LINES` lines.
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "speciesvi"
#: "no file over ~400 lines".
MAX_LINES = 400
#: Per subpackage, the subpackages and third-party packages its modules must not import.
FORBIDDEN = {
    "pp": {"torch", "scvi", "speciesvi.model", "speciesvi.module", "speciesvi.train", "speciesvi.tl", "speciesvi.pl"},
    "module": {"anndata", "speciesvi.model", "speciesvi.tl", "speciesvi.pl", "speciesvi.pp"},
    "train": {"anndata", "speciesvi.model", "speciesvi.tl", "speciesvi.pl", "speciesvi.pp"},
    "tl": {"speciesvi.model", "speciesvi.pl"},
    "pl": {"torch", "speciesvi.model", "speciesvi.module", "speciesvi.train"},
    "datasets": {
        "speciesvi.model",
        "speciesvi.module",
        "speciesvi.train",
        "speciesvi.tl",
        "speciesvi.pl",
        "speciesvi.pp",
    },
}


@dataclass
class Module:
    """One module of the package and what it imports."""

    name: str
    path: Path
    imports: dict[str, int] = field(default_factory=dict)  # imported name -> line
    in_functions: list[tuple[str, int]] = field(default_factory=list)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(node: ast.Import | ast.ImportFrom, name: str, is_package: bool) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not node.level:
        stem = node.module or ""
    else:
        base = name.split(".") if is_package else name.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        stem = ".".join(base + ([node.module] if node.module else []))
    return [stem] + [f"{stem}.{alias.name}" for alias in node.names]


def read_package(package: Path = PACKAGE) -> dict[str, Module]:
    """Every module of the package with its imports (absolute names) and the internal imports inside functions."""
    modules = {}
    for path in sorted(package.rglob("*.py")):
        module = Module(_module_name(path), path)
        tree = ast.parse(path.read_text())
        functions = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
        nested = {id(n) for f in functions for n in ast.walk(f) if isinstance(n, ast.Import | ast.ImportFrom)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                targets = _imported(node, module.name, path.name == "__init__.py")
                for target in targets:
                    module.imports.setdefault(target, node.lineno)
                if id(node) in nested and targets[0].startswith("speciesvi"):
                    module.in_functions.append((targets[0], node.lineno))
        modules[module.name] = module
    return modules


def _internal_graph(modules: dict[str, Module]) -> dict[str, set[str]]:
    graph = {}
    for name, module in modules.items():
        edges = set()
        for target in module.imports:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            # importing one's own package __init__ (``from .. import x``) is not an edge worth a cycle
            if target and target != name and not name.startswith(target + "."):
                edges.add(target)
        graph[name] = edges
    return graph


def import_cycles(modules: dict[str, Module]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan)."""
    graph = _internal_graph(modules)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def layering_violations(modules: dict[str, Module]) -> list[str]:
    """Imports that break the layering rules of :data:`FORBIDDEN`."""
    problems = []
    for module in modules.values():
        parts = module.name.split(".")
        forbidden = FORBIDDEN.get(parts[1], set()) if len(parts) > 1 else set()
        for target, line in module.imports.items():
            for rule in forbidden:
                if target == rule or target.startswith(rule + "."):
                    problems.append(f"{module.path.relative_to(PACKAGE.parent)}:{line} imports {target}")
    return sorted(set(problems))


def function_imports(modules: dict[str, Module]) -> list[str]:
    """Imports of speciesvi modules inside functions."""
    return [
        f"{module.path.relative_to(PACKAGE.parent)}:{line} imports {target} inside a function"
        for module in modules.values()
        for target, line in module.in_functions
    ]


def line_counts(package: Path = PACKAGE) -> dict[str, int]:
    """Lines of every file of the package."""
    return {str(p.relative_to(package.parent)): len(p.read_text().splitlines()) for p in sorted(package.rglob("*.py"))}


def main() -> int:
    """Run every check; print what breaks a rule."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", action="store_true", help="also list the line count of every file")
    args = parser.parse_args()
    modules = read_package()
    counts = line_counts()
    problems = [f"import cycle: {' <-> '.join(c)}" for c in import_cycles(modules)]
    problems += layering_violations(modules) + function_imports(modules)
    problems += [f"{path}: {n} lines (more than {MAX_LINES})" for path, n in counts.items() if n > MAX_LINES]
    out = sys.stdout
    if args.lines:
        out.write("".join(f"{n:5d}  {path}\n" for path, n in counts.items()))
    out.write(f"{len(modules)} modules, {sum(counts.values())} lines; ")
    out.write("no problem\n" if not problems else f"{len(problems)} problem(s):\n" + "\n".join(problems) + "\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
