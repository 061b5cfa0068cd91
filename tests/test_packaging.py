"""The pinned sets agree with the ranges in pyproject.toml, so the documented installs resolve; imports between
the project's packages run one way."""

import ast
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]


def _pins(name: str) -> dict[str, str]:
    pins = {}
    for line in (ROOT / name).read_text().splitlines():
        line = line.split("#")[0].strip()
        if "==" in line:
            pkg, version = line.split("==")
            pins[pkg.strip().lower().replace("_", "-")] = version.strip()
    return pins


def _requirements(extra: str | None = None) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    items = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    return [Requirement(r) for r in items]


@pytest.mark.parametrize(
    "constraints, extras", [("constraints-cpu.txt", [None, "test"]), ("constraints-gpu.txt", [None, "gpu"])]
)
def test_pins_satisfy_the_declared_ranges(constraints, extras):
    pins = _pins(constraints)
    checked = 0
    for extra in extras:
        for req in _requirements(extra):
            name = req.name.lower().replace("_", "-")
            if name in pins and (req.marker is None or req.marker.evaluate()):
                assert req.specifier.contains(pins[name], prereleases=True), (
                    f"{constraints}: {name}=={pins[name]} vs {req}"
                )
                checked += 1
    assert checked >= 4  # torch, transformers, verl, ray at least


def test_cpu_pins_are_the_measured_stack():
    pins = _pins("constraints-cpu.txt")
    assert pins["torch"].startswith("2.14.") and pins["transformers"].startswith("5.10.") and pins["verl"] == "0.9.1"


# every package of the project (ruff's first-party list names them all)
PROJECT_PACKAGES = set(
    tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["ruff"]["lint"]["isort"]["known-first-party"]
)
RUNTIME_PACKAGES = ("envs", "rewards", "rollout", "rl", "eval")


def _imported_packages(path: Path) -> set[str]:
    """The top-level packages a module imports (absolute imports only: a relative one stays in its package)."""
    tops = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            tops.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            tops.add(node.module.split(".")[0])
    return tops


def _forbidden_imports(package: str, forbidden: set[str]) -> list[str]:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no modules under {package}/"
    return [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in files
        for name in sorted(_imported_packages(path) & forbidden)
    ]


@pytest.mark.parametrize("package", RUNTIME_PACKAGES)
def test_runtime_code_never_imports_an_offline_builder(package):
    bad = _forbidden_imports(package, {"data_builders"})
    assert not bad, "runtime code imports an offline builder (move what it needs to common/):\n" + "\n".join(bad)


def test_common_imports_no_other_project_package():
    bad = _forbidden_imports("common", PROJECT_PACKAGES - {"common"})
    assert not bad, "common/ imports another project package:\n" + "\n".join(bad)


def test_the_import_scan_sees_every_form(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "import data_builders.cap as c\nfrom envs import base\nfrom .x import y\n"
        "def f():\n    from rewards.mcq import score\n"
    )
    assert _imported_packages(module) == {"data_builders", "envs", "rewards"}
