"""The dependencies declared in pyproject.toml cover every package that speciesvi imports."""

import ast
import importlib.metadata
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "speciesvi"
OPTIONAL = ("ImportError", "ModuleNotFoundError")


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _guards_import_error(node: ast.Try) -> bool:
    for handler in node.handlers:
        caught = handler.type.elts if isinstance(handler.type, ast.Tuple) else [handler.type]
        if any(isinstance(name, ast.Name) and name.id in OPTIONAL for name in caught):
            return True
    return False


def _runtime_imports(node: ast.AST, found: set[str]) -> None:
    """Top-level modules imported when the code runs: not under ``TYPE_CHECKING``, not optional (try/except ImportError)."""
    if isinstance(node, ast.If) and _is_type_checking(node):
        for child in node.orelse:
            _runtime_imports(child, found)
        return
    if isinstance(node, ast.Try) and _guards_import_error(node):
        for child in [*node.handlers, *node.orelse, *node.finalbody]:
            _runtime_imports(child, found)
        return
    if isinstance(node, ast.Import):
        found.update(alias.name.split(".")[0] for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        found.add(node.module.split(".")[0])
    for child in ast.iter_child_nodes(node):
        _runtime_imports(child, found)


def _third_party_imports() -> dict[str, list[str]]:
    """Import name -> the files that import it at run time (standard library and speciesvi itself left out)."""
    where: dict[str, list[str]] = {}
    for path in sorted(SOURCE.rglob("*.py")):
        found: set[str] = set()
        _runtime_imports(ast.parse(path.read_text(encoding="utf-8")), found)
        for name in found - set(sys.stdlib_module_names) - {"speciesvi"}:
            where.setdefault(name, []).append(str(path.relative_to(ROOT)))
    return where


def _declared() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    requirements = [Requirement(line) for line in project["dependencies"]]
    return {canonicalize_name(requirement.name): requirement for requirement in requirements}


def test_every_imported_package_is_a_declared_dependency():
    # import name -> distributions (sklearn -> scikit-learn, scvi -> scvi-tools)
    distributions = importlib.metadata.packages_distributions()
    declared = _declared()
    imports = _third_party_imports()
    assert {"numpy", "torch", "scvi", "numba"} <= imports.keys()  # the scan sees the imports
    missing = {}
    for name, files in imports.items():
        candidates = {canonicalize_name(dist) for dist in distributions.get(name, [name])}
        if not candidates & declared.keys():
            missing[name] = (sorted(candidates), files)
    assert not missing, f"imported by speciesvi but not in pyproject's dependencies: {missing}"


def test_installed_versions_satisfy_the_declared_bounds():
    """The environment the tests run in is one the declared bounds allow (a bound is neither stale nor too tight)."""
    for name, requirement in _declared().items():
        version = importlib.metadata.version(name)
        assert requirement.specifier.contains(version, prereleases=True), f"{name} {version} is not {requirement}"
    torch = _declared()["torch"].specifier
    # speciesvi.train uses torch.optim.Adam(fused=True) on the CPU (torch 2.4+) and model files are read under
    # torch.serialization.safe_globals with (object, "module.name") entries (torch 2.6+)
    assert not torch.contains("2.5.1") and torch.contains("2.6.0")
    assert _declared()["numba"].specifier.contains("0.60.0")
