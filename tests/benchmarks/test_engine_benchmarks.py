"""Smoke tests of the engine benchmarks: they run on the tiny model and report what they say they report."""

from __future__ import annotations

import re

from benchmarks import engine_agreement, weight_sync


def test_engine_agreement_reports_the_positions_and_the_logprob_gap(capsys):
    engine_agreement.main(["--new-tokens", "8"])
    out = capsys.readouterr().out
    differ = int(re.search(r"(\d+) placed differently", out).group(1))
    shared = float(re.search(r"shared positions: +\|engine - trainer\| mean (\S+),", out).group(1))
    plain = float(re.search(r"transformers' positions: \|engine - trainer\| mean (\S+),", out).group(1))
    # 2/3 s per frame: transformers' int(1.33) = 1 s per grid moves every later temporal grid and the text after
    assert differ > 0
    assert shared < 1e-4 < plain  # fp32 on CPU: rounding with the shared positions, a real gap without


def test_weight_sync_reports_each_bucket_size(ray_local, tiny_model_dir):
    rows = weight_sync.main(["--syncs", "1", "--bucket-mb", "1", "512", "--model", tiny_model_dir])
    assert [(engine, bucket) for engine, bucket, _ in rows] == [("hf", 1.0), ("hf", 512.0)]
    for _, _, m in rows:
        assert m["seconds"] > 0 and m["worker_mb"] >= 0 and m["rank_mb"] >= 0
    text = weight_sync.report(rows, 39.5, tiny_model_dir, 1)
    assert text.splitlines()[1].split() == ["engine", "bucket", "MB", "s/sync", "worker", "MB", "rank", "MB"]
