"""The layout shows the architecture: a folder is one layer, imports go downward only, the
publisher library needs nothing of the server, and README's layout table lists every module."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.support.process import ROOT

#: the layers, lowest first: a module may import its own layer and those before it
LAYERS = (
    "notify_wire",
    "notify_publisher",
    "gateway.config",
    "gateway.core",
    "gateway.broker",
    "gateway.services",
    "gateway.edge",
    "gateway.conn",
    "gateway.ops",
    "gateway.server",
    "gateway.cli",
    "gateway.__main__",
)
#: what of the publisher library the server itself may use: its Redis client factories
SERVER_MAY_USE = ("notify_publisher.connect",)
PACKAGES = (
    ROOT / "gateway",
    ROOT / "clients/python/notify_wire",
    ROOT / "clients/python/notify_publisher",
)
MAX_CLASS_LINES = 250
MAX_FUNCTION_LINES = 60


def _modules() -> list[tuple[str, Path]]:
    found = []
    for package in PACKAGES:
        for path in sorted(package.rglob("*.py")):
            base = ROOT / "clients/python" if "clients" in path.parts else ROOT
            name = ".".join(path.relative_to(base).with_suffix("").parts).removesuffix(".__init__")
            found.append((name, path))
    return found


def _layer(module: str) -> int:
    if module == "gateway":
        return 0  # the package's face: __version__ only
    ranks = [
        i for i, layer in enumerate(LAYERS) if module == layer or module.startswith(layer + ".")
    ]
    assert ranks, f"{module} belongs to no layer of tests/test_layout.py"
    return ranks[-1]


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
    return [n for n in names if n.split(".")[0] in ("gateway", "notify_wire", "notify_publisher")]


def test_imports_go_downward_only() -> None:
    upward = []
    for module, path in _modules():
        mine = _layer(module)
        for imported in _imports(path):
            theirs = _layer(imported)
            if LAYERS[theirs] == "notify_publisher" and module.startswith("gateway."):
                # The server uses the library's client factories, the command line all of it.
                if not (imported.startswith(SERVER_MAY_USE) or module.startswith("gateway.cli")):
                    upward.append((module, imported))
            elif theirs > mine:
                upward.append((module, imported))
    assert not upward, upward


def test_the_wire_rules_and_the_library_import_nothing_of_the_server() -> None:
    for module, path in _modules():
        if module.startswith(("notify_wire", "notify_publisher")):
            server = [n for n in _imports(path) if n.startswith("gateway")]
            assert not server, (module, server)
        if module.startswith("notify_wire"):
            library = [n for n in _imports(path) if n.startswith("notify_publisher")]
            assert not library, (module, library)


def _readme_modules() -> set[str]:
    section = (ROOT / "README.md").read_text().split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    listed = set()
    for line in section.splitlines():
        cells = line.strip().strip("|").split("|")
        if len(cells) < 3:
            continue
        folder = ""
        for name in re.findall(r"`([^`]+)`", cells[1]):
            if "/" in name:
                folder = name.rsplit("/", 1)[0]
                listed.add(name)
            else:
                listed.add(f"{folder}/{name}")
    return listed


def test_the_readme_layout_table_lists_every_module() -> None:
    listed = _readme_modules()
    missing = [
        str(path.relative_to(ROOT))
        for _, path in _modules()
        if path.name != "__init__.py" and str(path.relative_to(ROOT)) not in listed
    ]
    assert not missing, f"add to README.md's layout table: {missing}"
    gone = [name for name in listed if name.endswith(".py") and not (ROOT / name).exists()]
    assert not gone, f"README.md's layout table names modules that do not exist: {gone}"


@pytest.mark.parametrize(("module", "path"), _modules(), ids=lambda v: str(v))
def test_no_class_or_function_outgrows_one_concept(module: str, path: Path) -> None:
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        lines = (node.end_lineno or node.lineno) - node.lineno + 1
        limit = MAX_CLASS_LINES if isinstance(node, ast.ClassDef) else MAX_FUNCTION_LINES
        assert lines <= limit, f"{module}.{node.name} is {lines} lines (at most {limit})"
