"""The pinned sets agree with the ranges in pyproject.toml, so the documented installs resolve."""

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
