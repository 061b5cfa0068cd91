"""The packing benchmark: its position counts on hand-worked layouts, and a small real run whose three layouts
give the same loss."""

from benchmarks.sft_packing import main, plans, positions, report


def test_plans_and_positions_by_hand():
    lengths = [10, 50, 20, 40]
    got = plans(lengths, micro_batch_size=2, pack_tokens=60)
    assert got["padded"] == [[0, 1], [2, 3]]  # 2 * 50 + 2 * 40 = 180 positions
    assert got["grouped"] == [[1, 3], [2, 0]]  # 2 * 50 + 2 * 20 = 140
    assert got["packed"] == [[1, 0], [3, 2]]  # 50 + 10, 40 + 20: 120, no padding
    assert [positions(lengths, got[m], m == "packed") for m in ("padded", "grouped", "packed")] == [180, 140, 120]


def test_report_ratios():
    results = {
        "padded": {"forwards": 2, "positions": 200, "seconds": 4.0, "loss": 1.0},
        "grouped": {"forwards": 2, "positions": 150, "seconds": 3.0, "loss": 1.0},
        "packed": {"forwards": 1, "positions": 100, "seconds": 1.0, "loss": 1.0},
    }
    lines = report(results, {"sequences": 4, "tokens": 100, "pack_tokens": 100}).splitlines()
    assert lines[2].split() == ["grouped", "2", "150", "0.75x", "3.000", "0.75x", "1.0000"]
    assert lines[3].split() == ["packed", "1", "100", "0.50x", "1.000", "0.25x", "1.0000"]


def test_small_run_layouts_agree(tiny_model_dir, capsys):
    results = main(["--model", tiny_model_dir, "--n", "4", "--max-response", "24", "--repeats", "1"])
    losses = [r["loss"] for r in results.values()]
    assert max(losses) - min(losses) < 1e-5 and losses[0] > 10  # ~ln(151,936) for the untrained model
    assert results["packed"]["positions"] <= results["grouped"]["positions"] <= results["padded"]["positions"]
    assert "packed" in capsys.readouterr().out
