"""Read annotation pickles (FineDiving, LOGO) without running arbitrary code.

`pickle.load` calls whatever callable a file names, so a tampered annotation file could run `os.system`. The
restricted unpickler admits only plain builtin containers and numbers, numpy arrays, dtypes and scalars (what
these annotation files hold) and refuses everything else with an error naming the file and the refused global.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

# (module, name) pairs a numpy array or scalar pickle needs, across numpy 1.x (numpy.core) and 2.x (numpy._core)
_NUMPY = {
    (mod, name) for mod in ("numpy.core.multiarray", "numpy._core.multiarray") for name in ("_reconstruct", "scalar")
} | {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    # Python 3 writes the bytes of an array as `_codecs.encode(text, "latin1")` under pickle protocol 2
    ("_codecs", "encode"),
}
_BUILTINS = {"set", "frozenset", "complex", "slice", "range", "bytearray", "list", "dict", "tuple", "int", "float"}


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle that names a global outside the allow-list."""


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler whose find_class admits only builtins containers/numbers and numpy arrays."""

    def __init__(self, file, source: str):
        super().__init__(file, encoding="latin1")  # latin1: numpy arrays written by Python 2 load too
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module == "builtins" and name in _BUILTINS) or (module, name) in _NUMPY:
            return super().find_class(module, name)
        raise UnsafePickleError(
            f"{self.source}: refused to load {module}.{name}: only builtins and numpy arrays are allowed in "
            "annotation pickles (the file may be tampered with or not the official one)"
        )


def load_pickle(path: str | Path) -> Any:
    """Load a pickle file with the restricted unpickler; UnsafePickleError names the file and the refused class."""
    path = Path(path)
    with path.open("rb") as f:
        try:
            return RestrictedUnpickler(f, str(path)).load()
        except UnsafePickleError:
            raise
        except Exception as e:  # truncated or not a pickle at all
            raise pickle.UnpicklingError(f"{path}: not a readable pickle ({type(e).__name__}: {e})") from None
