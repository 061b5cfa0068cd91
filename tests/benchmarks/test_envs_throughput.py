"""The tool-throughput benchmark runs end to end, tiny, and its report's arithmetic is right."""

import re

from benchmarks.envs_throughput import main


def test_runs_tiny_and_reports_both_comparisons(capsys):
    m = main(["--frames", "4", "--repeats", "1", "--imgsz", "160", "--max-side", "160"])
    out = capsys.readouterr().out
    assert m["frames"] == 4 and all(m[k] > 0 for k in ("batched_s", "single_s", "first_s", "cached_s"))
    fps = re.search(r"batched \(one call_batch\)\s+([\d.]+) frames/s", out)
    assert fps and abs(float(fps[1]) - 4 / m["batched_s"]) < 0.1
    speedup = re.search(r"cached speed-up\s+([\d.]+)x", out)
    assert speedup and float(speedup[1]) > 1  # a cache hit skips the model entirely
