"""The wheel holds every module and data file the editable install can import, and nothing from dev-only dirs.

A non-editable ``pip install .`` once shipped without ``backend/trainer/`` (packages were listed by hand) and
nothing noticed, because every test ran against the repo. These tests build the wheel from a copy of the
checkout and compare it with the source tree on disk.
"""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Top-level directories that hold development-only code; every other top-level directory with Python in it
# is part of the installed program.
DEV_ONLY = frozenset({"tests", "bench", "scripts", "datasets", "docs", "deployments"})
# Files inside shipped packages that nothing loads at run time (documentation for readers of the repo).
NOT_SHIPPED = frozenset({"backend/README.md"})
# What .gitignore keeps out of a clone: never part of the source tree.
_IGNORED = frozenset(
    {".git", ".venv", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", "build", "dist", "runs"}
    | {".ftpipe"}
)


def _ignored(name: str) -> bool:
    return name in _IGNORED or name.endswith((".egg-info", ".pyc"))


def _files_under(top: Path) -> set[str]:
    """Repo-relative posix paths of the files under ``top``, without what .gitignore excludes."""
    out: set[str] = set()
    for root, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if not _ignored(d)]
        out.update(Path(root, f).relative_to(REPO).as_posix() for f in files if not _ignored(f))
    return out


def _code_dirs() -> dict[str, set[str]]:
    """Each top-level directory holding Python code, with its files."""
    dirs = {}
    for top in sorted(REPO.iterdir()):
        if top.is_dir() and not top.name.startswith(".") and not _ignored(top.name):
            files = _files_under(top)
            if any(f.endswith(".py") for f in files):
                dirs[top.name] = files
    return dirs


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    """The wheel built from a copy of the checkout (a stale build/ in the repo must not leak into it)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(REPO, src, ignore=lambda _dir, names: [n for n in names if _ignored(n)])
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp, src],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (built,) = tmp.glob("ftpipe-*.whl")
    return zipfile.ZipFile(built)


def _payload(wheel: zipfile.ZipFile) -> set[str]:
    return {n for n in wheel.namelist() if not n.split("/")[0].endswith(".dist-info")}


def test_wheel_holds_every_file_of_every_shipped_code_dir(wheel: zipfile.ZipFile) -> None:
    code_dirs = _code_dirs()
    assert "backend" in code_dirs and "tests" in code_dirs  # the walk found the tree
    shipped = {name: files for name, files in code_dirs.items() if name not in DEV_ONLY}
    expected = set().union(*shipped.values()) - NOT_SHIPPED
    payload = _payload(wheel)
    assert sorted(expected - payload) == [], "modules or data files missing from the wheel"
    assert sorted(payload - expected) == [], "the wheel holds files that are not in a shipped code dir"
    # The data files the code loads at run time (importlib.resources in schemas/__init__.py).
    assert {"schemas/chat.schema.json", "schemas/preference.schema.json"} <= payload
    assert "backend/trainer/train.py" in payload


def test_pyproject_lists_agree_with_the_tree() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    shipped = {name for name in _code_dirs() if name not in DEV_ONLY}
    assert set(config["tool"]["mypy"]["packages"]) == shipped  # mypy checks exactly what ships
    excluded = config["tool"]["setuptools"]["packages"]["find"]["exclude"]
    assert {pattern.split(".")[0] for pattern in excluded} == DEV_ONLY


def test_console_script_points_into_the_wheel(wheel: zipfile.ZipFile) -> None:
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/entry_points.txt")]
    entry_points = configparser.ConfigParser()
    entry_points.read_string(wheel.read(name).decode())
    target = entry_points["console_scripts"]["ftpipe"]
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert target == config["project"]["scripts"]["ftpipe"]
    module = target.split(":")[0].replace(".", "/")
    assert f"{module}.py" in _payload(wheel) or f"{module}/__init__.py" in _payload(wheel)


def test_every_module_imports_from_the_unpacked_wheel(wheel: zipfile.ZipFile, tmp_path: Path) -> None:
    """Import every module of the source tree with only the wheel's files (not the repo) to find it."""
    unpacked = tmp_path / "site"
    wheel.extractall(unpacked)
    shipped = {name: files for name, files in _code_dirs().items() if name not in DEV_ONLY}
    modules = sorted(
        f[: -len(".py")].removesuffix("/__init__").replace("/", ".")
        for f in set().union(*shipped.values())
        if f.endswith(".py") and not f.endswith("__main__.py")
    )
    script = (
        "import importlib, sys\n"
        # The dev venv's editable install adds a finder that maps these packages to the repo: drop it.
        "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in getattr(f, '__module__', '')]\n"
        "root, tops = sys.argv[1], set(sys.argv[2].split(','))\n"
        "for name in sys.argv[3:]:\n"
        "    importlib.import_module(name)\n"
        "for name, mod in list(sys.modules.items()):\n"
        "    if name.split('.')[0] in tops:\n"
        "        assert (getattr(mod, '__file__', None) or root).startswith(root), (name, mod.__file__)\n"
    )
    # cwd outside the repo, so the repo is not on sys.path.
    proc = subprocess.run(
        [sys.executable, "-c", script, str(unpacked), ",".join(shipped), *modules],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(unpacked)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
