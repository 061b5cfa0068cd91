"""The papers' GRPO settings as named configs (recipes/configs/<paper>_paper.yaml): each loads and validates the
way a recipe loads it, and holds the values the paper (or, where the paper is silent, the authors' release)
states; the loss aggregation chosen for Video-STAR equals its release's loss expression."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from recipes import grpo, hieroaction_grpo, videostar_grpo

CONFIGS = Path(__file__).resolve().parents[2] / "recipes" / "configs"
HIERO_PAPER = CONFIGS / "hieroaction_paper.yaml"
VSTAR_PAPER = CONFIGS / "videostar_paper.yaml"


def rewards_of(cfg) -> dict:
    return {c.name: (c.weight, dict(c.args), c.when) for c in cfg.rewards.components}


@pytest.mark.parametrize("how", ["the paper yaml as the default", "config= on the recipe's command line"])
def test_hieroaction_paper_config_loads_with_the_papers_values(how):
    if how == "config= on the recipe's command line":
        cfg = grpo.load([f"config={HIERO_PAPER}"], hieroaction_grpo.DEFAULT_YAML)
    else:
        cfg = grpo.load([], HIERO_PAPER)
    r, t = cfg.rollout, cfg.trainer
    # Supplementary, Implementation Details: G = 8, temperature 1.5, 3072 tokens, lr 1e-6, beta 0.04, batch 16, seed 42
    assert (r.n, r.temperature, r.max_new_tokens, r.max_response_tokens, r.max_turns) == (8, 1.5, 3072, 3072, 1)
    assert (t.lr, t.kl_coef, cfg.data.batch_size, cfg.run.seed) == (1e-6, 0.04, 16, 42)
    assert t.loss_agg_mode == "seq-mean-token-mean" and r.tools == {}
    # 10 epochs of FineDiving's 2,251 training clips at 16 per step
    assert cfg.run.steps == math.ceil(10 * 2251 / 16)
    # 0.1 format + 0.3 each other; alpha 0.5; the paper's tIoU form
    assert rewards_of(cfg) == {
        "sar_format": (0.1, {}, None),
        "temporal_iou": (0.3, {"mode": "paper"}, None),
        "hier_action": (0.3, {"alpha": 0.5}, None),
        "aqa_score": (0.3, {"lam_q": 10.0, "lam_d": 10.0, "difficulty_range": [1.0, 4.0]}, None),
    }
    # greedy evaluation, R-l2 over the set's range (CoRe's code), the paper's tIoU
    assert (cfg.eval.temperature, cfg.eval.rl2_range, cfg.eval.tiou_mode) == (0.0, "set", "paper")
    assert cfg.cold_start.steps == 0 and not cfg.rollout.system_prompt.endswith(".txt")  # the prompt file was read
    # "the highest-reward response is used for training": best-of-G on, and 16 samples split across the ranks
    assert cfg.best_of_g is True and cfg.data.batch_size % cfg.trainer.world_size == 0


def test_hieroaction_paper_config_takes_a_real_run_on_the_command_line(tmp_path, tiny_model_dir):
    cfg = grpo.load(
        [f"model.path={tiny_model_dir}", "trainer.world_size=4", "run.run_dir=" + str(tmp_path)], HIERO_PAPER
    )
    assert cfg.model.path == str(tiny_model_dir) and cfg.rollout.n == 8  # the paper's values stay
    assert cfg.best_of_g is True and cfg.trainer.world_size == 4  # 16 samples, 4 kept per rank
    # the recipe's embedded default and Video-STAR's paper config train on all G (plain GRPO)
    assert grpo.load([], hieroaction_grpo.DEFAULT_YAML).best_of_g is False
    assert grpo.load([], VSTAR_PAPER).best_of_g is False


def test_hieroaction_paper_config_help_shows_its_values(capsys):
    with pytest.raises(SystemExit) as exc:
        grpo.load(["--help"], HIERO_PAPER)
    out = capsys.readouterr().out
    assert exc.value.code == 0 and "rollout.temperature = 1.5" in out and "trainer.kl_coef = 0.04" in out
    assert "  best_of_g = True\n      HieroAction's best-of-G" in out


def test_videostar_paper_config_loads_with_the_papers_and_releases_values():
    for cfg in (grpo.load([], VSTAR_PAPER), grpo.load([f"config={VSTAR_PAPER}"], videostar_grpo.DEFAULT_YAML)):
        r, t = cfg.rollout, cfg.trainer
        assert (r.n, r.temperature, r.max_new_tokens, r.max_turns) == (4, 0.8, 4096, 2)
        # the release's video reading: at most 16 frames, 128 x 28 x 28 pixels each (392 x 280 for a 4:3 clip)
        assert (r.num_frames, r.max_side) == (16, 392)
        assert (t.lr, t.lr_schedule, t.weight_decay, t.grad_clip) == (5e-7, "cosine", 0.01, 5.0)
        assert (t.kl_coef, t.kl_type, t.loss_agg_mode) == (0.04, "low_var_kl", "seq-mean-token-mean")
        assert (cfg.data.batch_size, cfg.run.steps, cfg.cold_start.steps) == (8, 600, 0)
        # all four rewards, each weight 1, the tool reward gated on accuracy, sub-motions weighed linearly
        assert rewards_of(cfg) == {
            "accuracy": (1.0, {}, None),
            "format": (1.0, {}, None),
            "tool_usage": (1.0, {}, "accuracy"),
            "submotion": (1.0, {"scheme": "linear"}, None),
        }
        assert sorted(r.enabled_tools()) == [
            "action_explanation",
            "human_detection",
            "pose_estimation",
            "video_description",
        ]


def test_videostar_embedded_default_trains_on_the_four_rewards_as_the_paper_config_does():
    from common.sample_data import build_sample_data, default_sample_dir
    from common.schema import load_records

    default, paper = grpo.load([], videostar_grpo.DEFAULT_YAML), grpo.load([], VSTAR_PAPER)
    four = {
        "accuracy": (1.0, {}, None),
        "format": (1.0, {}, None),
        "tool_usage": (1.0, {}, "accuracy"),
        "submotion": (1.0, {"scheme": "linear"}, None),
    }
    assert rewards_of(default) == four and rewards_of(paper) == four
    # the sub-motion term applies to every bundled ovar record: each carries its ranked sub_motions
    sample = build_sample_data(default_sample_dir())
    for split in ("train", "eval"):
        recs = load_records(sample[split])
        assert recs and all(r["sub_motions"] and all(isinstance(m, str) and m for m in r["sub_motions"]) for r in recs)


def test_seq_mean_token_mean_is_the_video_star_release_loss():
    """The release's loss (grpo_trainer.py), on policy: per_token = -(exp(lp - lp.detach()) * A - beta * k3) with
    k3 = exp(x) - x - 1, x = ref - lp; loss = ((per_token * mask).sum(1) / mask.sum(1)).mean(). Our grpo_loss with
    the config's seq-mean-token-mean must give the same number; token-mean weighs long sequences more and does not."""
    import torch

    from rl.grpo import grpo_loss

    torch.manual_seed(0)
    lp = -torch.rand(3, 6) * 2
    ref = lp + 0.3 * torch.randn(3, 6)
    adv = torch.tensor([1.0, -0.5, 2.0])
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0]], dtype=torch.float32)
    x = torch.clamp(ref - lp, -10, 10)
    per_token = -(torch.exp(lp - lp.detach()) * adv[:, None] - 0.04 * (torch.exp(x) - x - 1))
    release = ((per_token * mask).sum(1) / mask.sum(1)).mean()

    def ours(mode: str) -> float:
        loss, _ = grpo_loss(lp, lp.detach(), ref, adv, mask, kl_coef=0.04, kl_type="low_var_kl", loss_agg_mode=mode)
        return float(loss)

    assert ours(grpo.load([], VSTAR_PAPER).trainer.loss_agg_mode) == pytest.approx(float(release), rel=1e-6)
    assert ours("token-mean") != pytest.approx(float(release), rel=1e-3)


def test_sft_paper_configs_hold_the_papers_sft_settings():
    """The SFT stage of each paper, as its recipe loads it (a `config=` on the embedded default)."""
    from recipes import hieroaction_sft, sft, videostar_sft

    # Video-STAR [Impl.]: "Learning rate is set to 5e-7 with an accumulated total batch size of 8 in both stages",
    # 5,000 SFT samples, one epoch (the release's --num_train_epochs 1), --max_grad_norm 5
    vstar = sft.load([f"config={CONFIGS / 'videostar_sft_paper.yaml'}"], videostar_sft.DEFAULT_YAML)
    assert (vstar.trainer.lr, vstar.data.batch_size, vstar.trainer.grad_clip) == (5e-7, 8, 5.0)
    assert vstar.run.steps == 5000 // 8 and vstar.data.builder == "videostar_cot"
    # the replay takes the GRPO paper config's budgets, frames, turns and tools, so SFT trains on what GRPO samples
    grpo_paper = grpo.load([], VSTAR_PAPER).rollout
    for key in ("max_new_tokens", "max_response_tokens", "max_turns", "num_frames", "max_side", "system_prompt"):
        assert getattr(vstar.rollout, key) == getattr(grpo_paper, key), key
    assert sorted(vstar.rollout.enabled_tools()) == sorted(grpo_paper.enabled_tools())

    # HieroAction [Impl.], [Supp.]: batch 16, lr 2e-5, 25 epochs, a maximum output length of 3072 tokens, seed 42
    hiero = sft.load([f"config={CONFIGS / 'hieroaction_sft_paper.yaml'}"], hieroaction_sft.DEFAULT_YAML)
    assert (hiero.trainer.lr, hiero.data.batch_size, hiero.data.seed, hiero.run.seed) == (2e-5, 16, 42, 42)
    assert (hiero.rollout.max_new_tokens, hiero.rollout.max_response_tokens) == (3072, 3072)
    assert hiero.run.steps == math.ceil(25 * 2251 / 16) == 3518  # FineDiving's 2,251 training clips
    assert hiero.data.builder == "hieroaction_sar" and hiero.rollout.tools == {}
    # the same batch and output budget as the paper's HPL config ("the same hardware and batch configuration")
    hpl = grpo.load([], HIERO_PAPER)
    assert (hpl.data.batch_size, hpl.rollout.max_new_tokens) == (hiero.data.batch_size, hiero.rollout.max_new_tokens)
    # the embedded defaults keep their tiny-model rates
    assert sft.load([], hieroaction_sft.DEFAULT_YAML).trainer.lr == 5e-3


def test_sar_builder_default_budget_is_the_papers_output_length():
    from data_builders import hieroaction_sar

    assert hieroaction_sar.MAX_TOKENS == 3072 == grpo.load([], HIERO_PAPER).rollout.max_response_tokens


def documented_style_rewards(style: str) -> str:
    """The `rewards.components=` override of the GRPO command under "Table 4's CoT rows" in docs/papers.md."""
    text = (Path(__file__).resolve().parents[2] / "docs" / "papers.md").read_text()
    (line,) = [x.strip() for x in text.splitlines() if x.strip().startswith('"rewards.components=[{name: sar_format')]
    return line.rstrip("\\").strip().strip('"').replace("$STYLE", style)


@pytest.mark.parametrize("style", ["cot", "direct"])
def test_the_table4_style_runs_load_with_their_prompt_and_format_reward(style, tmp_path):
    from recipes import hieroaction_sft, sft

    prompt = f"rollout.system_prompt=hieroaction_system_{style}.txt"
    records = tmp_path / f"train_{style}.jsonl"
    records.write_text("{}\n")
    tuned = sft.load(
        [f"config={CONFIGS / 'hieroaction_sft_paper.yaml'}", f"data.train={records}", prompt],
        hieroaction_sft.DEFAULT_YAML,
    )
    # the docs' GRPO command: the paper's reward mix with the format reward of the style
    overrides = [f"config={HIERO_PAPER}", f"data.train={records}", prompt, documented_style_rewards(style)]
    hpl = grpo.load(overrides, hieroaction_grpo.DEFAULT_YAML)
    for cfg in (tuned, hpl):
        assert "<answer>" in cfg.rollout.system_prompt and "<look>" not in cfg.rollout.system_prompt
        assert ("<think>" in cfg.rollout.system_prompt) is (style == "cot")
    paper = rewards_of(grpo.load([], HIERO_PAPER))
    assert rewards_of(hpl) == {**paper, "sar_format": (0.1, {"style": style}, None)}
