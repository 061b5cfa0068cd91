"""The class lists of HMDB-51, UCF-101, Kinetics-400/700 and Something-Something v2, read from the `gluoncv` package.

`gluoncv` holds each dataset's label vocabulary as a literal list (`self.classes = [...]`) in
`gluoncv/data/<dataset>/classification.py`. We never import gluoncv (it would pull in mxnet); we locate the
file with `importlib.util.find_spec` and read the literal with `ast`, so the lists load offline and instantly.

    >>> len(class_list("hmdb51")), len(class_list("ucf101"))
    (51, 101)
    >>> readable("climb_stairs"), readable("ApplyEyeMakeup"), readable("abseiling")
    ('climb stairs', 'apply eye makeup', 'abseiling')
"""

from __future__ import annotations

import ast
import importlib.util
import re
from functools import cache
from pathlib import Path

# dataset name -> the gluoncv sub-package holding its class list
GLUONCV_DATASETS = {
    "hmdb51": "hmdb51",
    "ucf101": "ucf101",
    "kinetics400": "kinetics400",
    "kinetics700": "kinetics700",
    "ssv2": "somethingsomethingv2",
}


def gluoncv_dir() -> Path:
    """The installed gluoncv package folder (found without importing it)."""
    spec = importlib.util.find_spec("gluoncv")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the gluoncv package is not installed; it provides the class lists (pip install gluoncv==0.10.5.post0)"
        )
    return Path(list(spec.submodule_search_locations)[0])


@cache
def class_list(dataset: str) -> tuple[str, ...]:
    """The dataset's class names exactly as gluoncv spells them (e.g. `climb_stairs`, `ApplyEyeMakeup`)."""
    if dataset not in GLUONCV_DATASETS:
        raise KeyError(f"no gluoncv class list for {dataset!r}; known: {sorted(GLUONCV_DATASETS)}")
    path = gluoncv_dir() / "data" / GLUONCV_DATASETS[dataset] / "classification.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Assign)
            and len(node.targets) == 1
            and isinstance(node.targets[0], ast.Attribute)
            and node.targets[0].attr == "classes"
            and isinstance(node.value, ast.List)
        ):
            return tuple(ast.literal_eval(node.value))
    raise ValueError(f"{path}: no literal `self.classes = [...]` list found")


def readable(name: str) -> str:
    """A class name as words: underscores to spaces, CamelCase split, lower case (`ApplyEyeMakeup` -> ...)."""
    words = name.replace("_", " ")
    words = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", words)
    return re.sub(r"\s+", " ", words).strip().lower()
