"""rollout.positions: Qwen2.5-VL rope positions by hand, and where transformers 5.10's own computation differs."""

from __future__ import annotations

import pytest
import torch

from rollout.positions import install, mrope_positions
from rollout.trajectory import IMAGE_PAD_ID, VIDEO_PAD_ID

V, IMG = VIDEO_PAD_ID, IMAGE_PAD_ID


def test_a_video_by_hand():
    # grid (2, 4, 4): 2 temporal grids of 2 x 2 merged patches = 8 tokens; 1.5 s per grid x 2 tokens/s = step 3
    ids = [1] + [V] * 8 + [3]
    pos, delta = mrope_positions(ids, video_grid_thw=[[2, 4, 4]], second_per_grid_ts=[1.5], tokens_per_second=2)
    assert pos[0].tolist() == [0, 1, 1, 1, 1, 4, 4, 4, 4, 5]  # time: 0 and 3 after the text's 1; then max + 1
    assert pos[1].tolist() == [0, 1, 1, 2, 2, 1, 1, 2, 2, 5]  # rows
    assert pos[2].tolist() == [0, 1, 2, 1, 2, 1, 2, 1, 2, 5]  # columns
    assert delta == 5 + 1 - 10


def test_a_fractional_step_is_truncated_after_the_product():
    # 4 grids, 2/3 s each x 2 tokens/s = 1.333 per grid: 0, 1.33, 2.67, 4 -> 0, 1, 2, 4
    ids = [V] * 4
    pos, _ = mrope_positions(ids, video_grid_thw=[[4, 2, 2]], second_per_grid_ts=[2 / 3], tokens_per_second=2)
    assert pos[0].tolist() == [0, 1, 2, 4]


def test_images_and_text_between():
    ids = [7, IMG, IMG, 8, 9, IMG, 5]  # a 2 x 1 image, two text tokens, a 1 x 1 image
    pos, delta = mrope_positions(ids, image_grid_thw=[[1, 4, 2], [1, 2, 2]])
    assert pos.tolist() == [[0, 1, 1, 3, 4, 5, 6], [0, 1, 2, 3, 4, 5, 6], [0, 1, 1, 3, 4, 5, 6]]
    assert delta == 0


def test_a_missing_grid_is_an_error():
    with pytest.raises(ValueError, match="more video placeholders than grids"):
        mrope_positions([V, 1])


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(tiny_model_dir).eval()


def _rope(inner, ids, **grids):
    x = torch.tensor([ids])
    types = torch.tensor([[1 if t == IMG else 2 if t == V else 0 for t in ids]])
    return inner.get_rope_index(x, mm_token_type_ids=types, **{k: torch.tensor(v) for k, v in grids.items()})


def test_installed_on_the_model_with_padding_and_batches(model):
    """The installed method answers like transformers' for images (both follow the original code there) and
    gives ours for a video, where transformers 5.10 differs; padding (attention mask 0) gets position 0."""
    import copy

    plain = copy.deepcopy(model)
    install(model)
    image_ids = [7, IMG, IMG, 8]
    grids = {"image_grid_thw": [[1, 4, 2]]}
    ours, _ = _rope(model.model, image_ids, **grids)
    theirs, _ = _rope(plain.model, image_ids, **grids)
    assert torch.equal(ours, theirs)

    video_ids = [1] + [V] * 8 + [3]
    grids = {"video_grid_thw": [[2, 4, 4]], "second_per_grid_ts": [1.5]}
    ours, deltas = _rope(model.model, video_ids, **grids)
    theirs, _ = _rope(plain.model, video_ids, **grids)
    assert ours[0, 0].tolist() == [0, 1, 1, 1, 1, 4, 4, 4, 4, 5] and deltas.tolist() == [[-4]]
    assert theirs[0, 0].tolist() != ours[0, 0].tolist()  # transformers: int(1.5) = 1 s per grid, text at 3

    # two rows, the second right-padded: its grid comes second, its padding gets position 0
    batch = torch.tensor([video_ids + [0, 0], [5] + [V] * 8 + [6, 0, 0]])
    mask = torch.tensor([[1] * 10 + [0, 0], [1] * 10 + [0, 0]])
    types = (batch == V).long() * 2
    pos, deltas = model.model.get_rope_index(
        batch,
        mm_token_type_ids=types,
        video_grid_thw=torch.tensor([[2, 4, 4], [2, 4, 4]]),
        second_per_grid_ts=torch.tensor([1.5, 0.5]),
        attention_mask=mask,
    )
    assert pos[0, 0].tolist() == [0, 1, 1, 1, 1, 4, 4, 4, 4, 5, 0, 0]
    assert pos[0, 1].tolist() == [0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 0, 0]  # 0.5 s x 2 tokens/s: step 1
    assert deltas.tolist() == [[5 + 1 - 10], [3 + 1 - 10]]
    assert pos[1, 1].tolist() == [0, 1, 1, 2, 2, 1, 1, 2, 2, 3, 0, 0]  # rows of the second sample
