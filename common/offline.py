"""Runs never need the network: the HF hub and ultralytics look hosts up at import unless told not to."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# The variables a run sets, and hands to its Ray workers.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "YOLO_OFFLINE": "1",
    "YOLO_AUTOINSTALL": "False",
    "TOKENIZERS_PARALLELISM": "false",
    "YOLO_CONFIG_DIR": str(Path(tempfile.gettempdir()) / "actionrl-yolo"),
}


def offline_env() -> dict[str, str]:
    """Set each variable that is not set already; returns their values now (for a Ray runtime_env)."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    return {key: os.environ[key] for key in OFFLINE_ENV}
