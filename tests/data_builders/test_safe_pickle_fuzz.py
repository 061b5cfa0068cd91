"""Fuzzing the annotation-pickle reader: whatever the bytes, it returns plain data or raises UnsafePickleError.

Three sources of input: random bytes, valid pickles of annotation-shaped values with random mutations, and random
sequences of the very opcodes and numpy names the reader accepts (which reach its REDUCE and BUILD checks far more
often than random bytes do). Nothing here calls `pickle.loads` on a fuzzed input: that could run anything.
"""

from __future__ import annotations

import os
import pickle

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from data_builders.safe_pickle import ALLOCATION_SLACK, MAX_DEPTH, UnsafePickleError, loads_pickle
from tests.data_builders.test_safe_pickle import (
    BINGET,
    BINPUT,
    BUILD,
    EMPTY_LIST,
    MARK,
    NONE,
    REDUCE,
    TUPLE,
    array,
    dtype,
    frombuffer,
    glob,
    num,
    raw,
    text,
)

# SAFE_PICKLE_FUZZ_EXAMPLES=20000 for a longer search than the default run affords
EXAMPLES = int(os.environ.get("SAFE_PICKLE_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SCALARS = (type(None), bool, int, float, str, bytes, bytearray, np.generic, np.dtype)


def check_plain(value, size: int) -> None:
    """Only the types the reader may return, numeric arrays, no deeper than MAX_DEPTH, arrays within budget."""
    seen: set[int] = set()
    todo, nbytes = [(value, 0)], 0
    while todo:
        v, depth = todo.pop()
        assert depth <= MAX_DEPTH + 1
        if isinstance(v, np.ndarray):
            assert v.dtype.kind in "biufc" and not v.dtype.hasobject
            nbytes += v.nbytes
        elif isinstance(v, np.generic):
            assert v.dtype.kind in "biufc"
        elif isinstance(v, (list, tuple, dict)):
            if id(v) in seen:
                continue
            seen.add(id(v))
            items = [x for kv in v.items() for x in kv] if isinstance(v, dict) else list(v)
            todo += [(x, depth + 1) for x in items]
        else:
            assert isinstance(v, SCALARS), type(v)
    assert nbytes <= 2 * size + ALLOCATION_SLACK


def read(data: bytes) -> None:
    try:
        value = loads_pickle(data, "fuzz.pkl")
    except UnsafePickleError as e:
        assert str(e).startswith("fuzz.pkl: ")
        return
    check_plain(value, len(data))


@FUZZ
@given(st.sampled_from([b"", b"\x80\x02", b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00", b"\x80\x05"]), st.binary())
def test_random_bytes(header, body):
    read(header + body)


SEEDS = [
    pickle.dumps(value, protocol=p)
    for p in range(pickle.HIGHEST_PROTOCOL + 1)
    for value in (
        {("video", 1): {"frames_labels": np.array([1, 1, 10, 22]), "dive_score": np.float64(80.5), "d": 3.2}},
        [("video", 0), ("video", 1)],
        [np.asfortranarray(np.ones((2, 3), dtype=">f4")), np.bool_(False), np.array([], dtype="u2"), "é", b"x"],
        {"a": [[1, 2]] * 2, "b": (None, True, 2**40), "c": np.complex64(1j)},
    )
]


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["set", "insert", "delete", "truncate", "repeat"]))
        if kind == "set" and i < len(data):
            data[i] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[i:i] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete":
            del data[i : i + draw(st.integers(1, 8))]
        elif kind == "truncate":
            del data[i:]
        else:
            data[i:i] = data[i : i + draw(st.integers(1, 32))]
    return bytes(data)


@FUZZ
@given(mutated())
def test_mutated_valid_pickles(data):
    read(data)


DTYPES = st.sampled_from(["i8", "f4", "b1", "u1", "c16", "O8", "V8", "i16", "U4", "f8"])
FRAGMENTS = st.one_of(
    st.sampled_from(
        [MARK, TUPLE, b")", b"\x85", b"\x86", b"\x87", EMPTY_LIST, b"}", b"a", b"e", b"s", b"u", b"l", b"d"]
        + [REDUCE, BUILD, NONE, b"\x88", b"\x89", b"0", b"1", b"2", b"\x94", b"\x93", b"X\x01\x00\x00\x00C"]
        + [glob("numpy", "dtype"), glob("numpy", "ndarray"), glob("_codecs", "encode"), glob("builtins", "bytes")]
        + [glob("numpy._core.multiarray", n) for n in ("_reconstruct", "scalar")]
        + [glob("numpy._core.numeric", "_frombuffer"), text("latin1"), text("<"), text(">"), text("|")]
    ),
    st.builds(lambda i: BINPUT + bytes([i]), st.integers(0, 4)),
    st.builds(lambda i: BINGET + bytes([i]), st.integers(0, 4)),
    st.builds(num, st.integers(-(2**65), 2**65) | st.integers(-2, 16)),
    st.builds(raw, st.binary(max_size=24)),
    st.builds(text, st.text(max_size=8)),
    st.builds(
        lambda name, order, flags: dtype(name, order, flags), DTYPES, st.sampled_from("<>|="), st.integers(0, 3)
    ),
    st.builds(
        lambda shape, name, data, fb: (frombuffer if fb else array)(tuple(shape), dtype(name), data),
        st.lists(st.integers(-1, 2**40) | st.integers(0, 4), max_size=3),
        DTYPES,
        st.binary(max_size=24),
        st.booleans(),
    ),
)


@FUZZ
@given(st.lists(FRAGMENTS, max_size=30), st.sampled_from([b"\x80\x02", b"\x80\x03", b"\x80\x05", b""]))
def test_random_opcode_sequences(fragments, header):
    read(header + b"".join(fragments) + b".")


@FUZZ
@given(st.lists(FRAGMENTS, max_size=12))
def test_valid_array_followed_by_random_opcodes(fragments):
    """A valid array on the stack first, so the random opcodes that follow act on a real array and dtype."""
    start = b"\x80\x03" + array((2,), dtype("i8"), b"\0" * 16) + BINPUT + b"\x00" + dtype("f8") + BINPUT + b"\x01"
    read(start + b"".join(fragments) + b".")
