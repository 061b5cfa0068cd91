"""Shared fixtures: a local Ray instance, the tiny model directory, offline settings for ultralytics and HF."""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "False")
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="yolo-config-"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# GB of KV cache per vLLM CPU engine: the tiny model needs little
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")

import pytest  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if _has_cuda():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray instance for the whole test session (logical CPUs so several small actors fit)."""
    import ray

    if not ray.is_initialized():
        # the workers import test modules too (reward plugins named by dotted path in tests)
        env = {"env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}}
        ray.init(num_cpus=8, num_gpus=0, include_dashboard=False, log_to_driver=False, runtime_env=env)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_model_dir():
    """The embedded default model, built once into the cache ($ACTIONRL_HOME) and loaded by path."""
    from common.tiny_model import build_tiny_model, default_model_dir

    return str(build_tiny_model(default_model_dir()))
