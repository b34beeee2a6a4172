"""Installs come from the lock: every command and the image install exactly what uv.lock pins.

`make test` itself runs `uv lock --check` first (the lock and pyproject.toml agree both ways);
these tests hold the files to that discipline, so a new install path cannot bypass the lock.
"""

from __future__ import annotations

import re
import subprocess
import tomllib

from packaging.requirements import Requirement

from tests.support.process import ROOT


def _lock() -> dict[str, dict[str, object]]:
    packages = tomllib.loads((ROOT / "uv.lock").read_text())["package"]
    return {package["name"]: package for package in packages}


def _project() -> dict[str, object]:
    project: dict[str, object] = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return project


def _make_recipe(target: str) -> str:
    """The commands `make TARGET` would run, as make itself prints them."""
    result = subprocess.run(
        ["make", "--dry-run", "--always-make", target],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout


def test_every_dependency_and_tool_is_pinned_with_hashes_within_its_range() -> None:
    lock = _lock()
    project = _project()
    groups = project["dependency-groups"]
    assert isinstance(groups, dict)
    declared = [
        *project["project"]["dependencies"],  # type: ignore[index]
        *groups["test"],
        *groups["bench"],
    ]
    for line in declared:
        requirement = Requirement(line)
        name = requirement.name.lower()
        assert name in lock, f"{name} is not in uv.lock: run make lock"
        locked = lock[name]
        if "editable" in locked["source"]:  # type: ignore[operator]
            continue  # a package of this repository (the uv workspace), not a download
        assert requirement.specifier.contains(str(locked["version"])), (name, locked["version"])
        files = [*locked.get("wheels", []), locked.get("sdist")]  # type: ignore[list-item]
        hashes = [f["hash"] for f in files if f]  # type: ignore[index]
        assert hashes, name
        assert all(h.startswith("sha256:") for h in hashes), name


def test_the_lock_has_wheels_for_linux_x86_64_and_aarch64() -> None:
    for name in ("orjson", "hiredis", "uvloop", "mypy"):  # compiled: one wheel per platform
        wheels = [w["url"] for w in _lock()[name]["wheels"]]  # type: ignore[attr-defined]
        for machine in ("x86_64", "aarch64"):
            assert any("manylinux" in url and machine in url for url in wheels), (name, machine)


def test_uv_itself_is_pinned_with_hashes() -> None:
    text = (ROOT / "requirements" / "uv.txt").read_text()
    assert re.search(r"^uv==\d+\.\d+\.\d+", text, re.M)
    assert len(re.findall(r"--hash=sha256:[0-9a-f]{64}", text)) >= 2


def test_make_targets_install_only_from_the_lock() -> None:
    for target in ("run", "test", "bench"):
        recipe = _make_recipe(target)
        syncs = [line for line in recipe.splitlines() if " sync " in line]
        assert syncs, f"make {target} installs nothing?"
        assert all("--locked" in line for line in syncs), syncs
        for line in recipe.splitlines():
            if "pip install" in line:  # only uv itself, hashed
                assert "--require-hashes" in line, line
                assert "requirements/uv.txt" in line, line
    assert "uv lock --check" in _make_recipe("test")
    run = _make_recipe("run")
    assert "--group" not in run, "make run must not install test or bench tools"


def test_the_image_installs_from_the_same_lock() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert "uv.lock" in text
    assert re.search(r"uv sync --locked --no-default-groups --no-editable", text)
    assert "--require-hashes" in text
    assert "pip install ." not in text
    ignored = (ROOT / ".dockerignore").read_text()
    assert "!uv.lock" in ignored
    assert "!requirements/uv.txt" in ignored


def test_installing_the_publisher_library_pulls_in_nothing_of_the_server() -> None:
    publisher = _lock()["notify-publisher"]
    needs = {dependency["name"] for dependency in publisher["dependencies"]}  # type: ignore[attr-defined]
    assert needs == {"redis", "orjson"}
    server_only = {"websockets", "httptools", "prometheus-client", "structlog", "uvloop"}
    assert not needs & server_only
