"""The package layout rules of scripts/check_layout.py (cycles, layering, imports hidden in functions, file sizes)."""

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "check_layout.py"


@pytest.fixture(scope="module")
def layout():
    spec = importlib.util.spec_from_file_location("check_layout", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_layout"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_the_checker_finds_a_cycle_and_a_hidden_import(layout, tmp_path):
    package = tmp_path / "speciesvi"
    (package / "pp").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "pp" / "__init__.py").write_text("")
    (package / "pp" / "_a.py").write_text("from ._b import g\nimport torch\n")
    (package / "pp" / "_b.py").write_text("def g():\n    from ._a import f\n")
    layout.PACKAGE = package
    try:
        modules = layout.read_package(package)
        assert layout.import_cycles(modules) == [["speciesvi.pp._a", "speciesvi.pp._b"]]
        assert len(layout.function_imports(modules)) == 1
        assert any("imports torch" in p for p in layout.layering_violations(modules))
    finally:
        layout.PACKAGE = SCRIPT.parents[1] / "src" / "speciesvi"


def test_no_import_cycle(layout):
    assert layout.import_cycles(layout.read_package()) == []


def test_layering(layout):
    assert layout.layering_violations(layout.read_package()) == []


def test_no_package_import_inside_a_function(layout):
    assert layout.function_imports(layout.read_package()) == []


def test_no_file_over_the_limit(layout):
    too_long = {path: n for path, n in layout.line_counts().items() if n > layout.MAX_LINES}
    assert too_long == {}
