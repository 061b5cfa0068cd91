"""Video-STAR's numbers from builder outputs: base, novel and HM from one base-to-novel file, and mean ± std over
the three splits from one cross-dataset file, each read as a benchmark (a builder's folder and split), scored on
scripted replies, aggregated and tabulated; the expected values are worked out by hand below."""

from __future__ import annotations

import math

import pytest

from data_builders import hmdb51
from eval import report, tasks
from eval.benchmarks import load_benchmark
from tests.data_builders.test_hmdb51 import make_hmdb

# equal training counts: the later three classes are base (the frequency rule's tie order)
CLASSES = ["brush_hair", "cartwheel", "catch", "chew", "clap", "climb"]
BASE, NOVEL = CLASSES[3:], CLASSES[:3]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = make_hmdb(tmp_path_factory.mktemp("hmdb") / "hmdb51", CLASSES)
    out = tmp_path_factory.mktemp("records")
    assert hmdb51.main(["--root", str(root), "--out", str(out), "--quiet"]) == 0
    return out


def scored(benchmark, right) -> tuple[list[dict], list[dict]]:
    """Rows replying with the label where `right(record)`, else with another of its candidates."""
    records = benchmark.records
    rows = []
    for rec in records:
        answer = rec["label"] if right(rec) else next(c for c in rec["candidates"] if c != rec["label"])
        rows.append({"prediction": f"<think>.</think><answer>{answer}</answer>"})
    tasks.score_rows("ovar", rows, records)
    return rows, records


def test_base_novel_and_hm_from_one_builder_file(built):
    bench = load_benchmark(f"{built}:b2n_eval")
    assert len(bench.records) == 6 and {r["meta"]["base_or_novel"] for r in bench.records} == {"base", "novel"}
    # right on chew and clap (base), wrong on climb; right on brush_hair only (novel)
    rows, records = scored(bench, lambda r: r["meta"]["class"] in ("chew", "clap", "brush_hair"))
    m = tasks.aggregate("ovar", rows, records)
    # base 2/3, novel 1/3, HM = 2 (2/3)(1/3) / (2/3 + 1/3) = 4/9; top-1 over all six 3/6
    assert math.isclose(m["base"], 2 / 3) and math.isclose(m["novel"], 1 / 3)
    assert math.isclose(m["hm"], 4 / 9) and m["top1"] == 0.5 and m["n"] == 6
    assert not any(k.endswith("_fold_mean") for k in m)  # no fold in the base-to-novel file
    line = report.table(bench, [{"label": "ckpt", "step": 10, "variant": "", "metrics": m}]).splitlines()[-1]
    assert line == "| ckpt | 10 | 0.6667 | 0.3333 | 0.4444 | 0.5000 | 6 | 0 |"


def test_mean_and_std_over_the_three_splits_from_one_builder_file(built):
    bench = load_benchmark(f"{built}:xd_eval")
    folds = [r["meta"]["fold"] for r in bench.records]
    assert folds == [1] * 6 + [2] * 6 + [3] * 6
    # split k: wrong on the first k-1 classes, so 6/6, 5/6 and 4/6 right
    rows, records = scored(bench, lambda r: CLASSES.index(r["meta"]["class"]) >= r["meta"]["fold"] - 1)
    m = tasks.aggregate("ovar", rows, records)
    assert (m["top1/fold1"], m["top1/fold2"], m["top1/fold3"]) == (1.0, 5 / 6, 4 / 6)
    # mean (1 + 5/6 + 4/6) / 3 = 5/6; deviations 1/6, 0, -1/6: population variance (2/36) / 3 = 1/54
    assert math.isclose(m["top1_fold_mean"], 5 / 6) and math.isclose(m["top1_fold_std"], math.sqrt(1 / 54))
    assert math.isclose(m["top1"], 15 / 18)  # pooled over the 18 records
    table = report.table(bench, [{"label": "ckpt", "step": None, "variant": "", "metrics": m}])
    assert "| Top-1 over folds |" in table and "| 0.8333 ± 0.1361 |" in table


def test_doctests_of_the_fold_helpers():
    import doctest

    from data_builders import protocols, ssv2

    for module in (protocols, ssv2, report):
        assert doctest.testmod(module).failed == 0
