"""Layering: a tool folder (asr/, text/, vision/) never imports from another one.

Shared helpers belong in neutral modules (d2v_plugin/console.py, linear_probe.py, ...), so
each tool can change without breaking the others. Imports are read with ``ast`` (relative
imports resolved against the importing module), so nothing is imported and no torch is needed.
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, List, Tuple

PACKAGE = Path(__file__).resolve().parents[1] / "d2v_plugin"
TOOL_FOLDERS = ("asr", "text", "vision")


def imported_modules(path: Path, package_root: Path = PACKAGE) -> Iterator[Tuple[int, str]]:
    """(line, absolute module name) for every import statement in ``path``."""
    module = ".".join(path.relative_to(package_root.parent).with_suffix("").parts)
    package = module.rsplit(".", 1)[0]  # for a/b/__init__.py ("a.b.__init__") that is a.b too
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield node.lineno, target
            for alias in node.names:  # `from .. import asr` imports the folder itself
                yield node.lineno, f"{target}.{alias.name}"


def cross_tool_imports(package_root: Path = PACKAGE) -> List[str]:
    found = []
    for tool in TOOL_FOLDERS:
        for path in sorted((package_root / tool).rglob("*.py")):
            for line, name in imported_modules(path, package_root):
                parts = name.split(".")
                if (len(parts) >= 2 and parts[0] == package_root.name and parts[1] in TOOL_FOLDERS
                        and parts[1] != tool):
                    found.append(f"{path.relative_to(package_root.parent)}:{line} imports {name}")
    return found


def test_no_tool_folder_imports_another():
    assert cross_tool_imports() == []


def test_the_check_sees_relative_and_absolute_cross_imports(tmp_path):
    pkg = tmp_path / "d2v_plugin"
    for tool in TOOL_FOLDERS:
        (pkg / tool).mkdir(parents=True)
        (pkg / tool / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "console.py").write_text("")
    (pkg / "text" / "ok.py").write_text("from ..console import run\nfrom . import ok\nimport d2v_plugin.text.ok\n")
    (pkg / "text" / "bad.py").write_text("from ..asr._cli import run\nimport d2v_plugin.vision.probe\n"
                                         "from .. import asr\n")
    (pkg / "vision" / "__init__.py").write_text("from d2v_plugin.text import bad\n")
    found = cross_tool_imports(pkg)
    assert found == ["d2v_plugin/text/bad.py:1 imports d2v_plugin.asr._cli",
                     "d2v_plugin/text/bad.py:1 imports d2v_plugin.asr._cli.run",
                     "d2v_plugin/text/bad.py:2 imports d2v_plugin.vision.probe",
                     "d2v_plugin/text/bad.py:3 imports d2v_plugin.asr",
                     "d2v_plugin/vision/__init__.py:1 imports d2v_plugin.text",
                     "d2v_plugin/vision/__init__.py:1 imports d2v_plugin.text.bad"], found
