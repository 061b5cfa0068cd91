"""The annotation-pickle reader: real-shaped files load as pickle loads them, crafted ones are refused.

The crafted payloads are written opcode by opcode (helpers below). Each is checked to be refused with the file,
the byte offset and what was found, without running anything and without allocating what it declares.
"""

from __future__ import annotations

import pickle
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from data_builders.safe_pickle import MAX_DEPTH, UnsafePickleError, load_pickle, loads_pickle
from tests.data_builders.test_finediving import make_finediving
from tests.data_builders.test_logo_finefs import make_logo

# --- a small pickle assembler (protocol 3 opcodes; pickle.loads reads them too)
PROTO, STOP, MARK, TUPLE, REDUCE, BUILD, NONE = b"\x80\x03", b".", b"(", b"t", b"R", b"b", b"N"
FALSE, TRUE, EMPTY_LIST, APPEND, BINPUT, BINGET = b"\x89", b"\x88", b"]", b"a", b"q", b"h"


def glob(module: str, name: str) -> bytes:
    return b"c" + f"{module}\n{name}\n".encode()


def text(s: str) -> bytes:
    return b"X" + struct.pack("<I", len(s.encode())) + s.encode()


def raw(b: bytes) -> bytes:
    return b"B" + struct.pack("<I", len(b)) + b


def num(i: int) -> bytes:
    if -(2**31) <= i < 2**31:
        return b"J" + struct.pack("<i", i)
    enc = pickle.encode_long(i)
    return b"\x8a" + bytes([len(enc)]) + enc


def tup(*items: bytes) -> bytes:
    return MARK + b"".join(items) + TUPLE


def dtype(name: str, order: str = "<", flags: int = 0, names=NONE, fields=NONE) -> bytes:
    state = tup(num(3), text(order), NONE, names, fields, num(-1), num(-1), num(flags))
    return glob("numpy", "dtype") + tup(text(name), FALSE, TRUE) + REDUCE + state + BUILD


def array(shape: tuple, dt: bytes, data: bytes) -> bytes:
    """numpy's own protocol-2/3 form: _reconstruct(ndarray, (0,), b"b") then BUILD (1, shape, dtype, F, bytes)."""
    new = glob("numpy._core.multiarray", "_reconstruct") + tup(glob("numpy", "ndarray"), tup(num(0)), raw(b"b"))
    return new + REDUCE + tup(num(1), tup(*map(num, shape)), dt, FALSE, raw(data)) + BUILD


def frombuffer(shape: tuple, dt: bytes, data: bytes) -> bytes:
    """numpy's protocol-5 form: _frombuffer(bytes, dtype, shape, order)."""
    return glob("numpy._core.numeric", "_frombuffer") + tup(raw(data), dt, tup(*map(num, shape)), text("C")) + REDUCE


def whole(*parts: bytes) -> bytes:
    return PROTO + b"".join(parts) + STOP


def refused(tmp_path: Path, payload: bytes, pattern: str) -> UnsafePickleError:
    """Write the payload as evil.pkl; it must be refused naming the file, `pattern`, and a byte offset and opcode,
    with well under 1 MiB allocated on the way."""
    path = tmp_path / "evil.pkl"
    path.write_bytes(payload)
    tracemalloc.start()
    try:
        with pytest.raises(UnsafePickleError, match=pattern) as info:
            load_pickle(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(info.value).startswith(f"{path}: ") and "(at byte " in str(info.value), info.value
    assert peak < 1 << 20, f"{peak} bytes allocated while refusing"
    return info.value


# --- what real files hold loads exactly as pickle loads it


def same(a, b) -> bool:
    """Equal values of equal types; arrays also with equal dtype, shape, memory order and writability."""
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        flags = ("C_CONTIGUOUS", "F_CONTIGUOUS", "WRITEABLE")
        return (
            a.dtype == b.dtype
            and a.shape == b.shape
            and np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
            and all(a.flags[f] == b.flags[f] for f in flags)
        )
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, np.generic):
        return a.dtype == b.dtype and (a == b or (a != a and b != b))
    return a == b or (a != a and b != b)


KINDS = {
    "nested": {("video", 0): {"a": [1, 2.5, None, True, False, "x", "é", b"y", (1, "z")], "b": {}, "c": []}},
    "ints": [0, -1, 255, 256, 2**31, -(2**31) - 1, 2**63 - 1, -(2**63), 2**64 - 1],
    "floats": [0.0, -0.0, 1.5e300, float("inf"), float("nan")],
    "arrays": [
        np.array([[1, 2], [3, 4]], dtype=">i4"),
        np.asfortranarray(np.arange(6.0).reshape(2, 3)),
        np.array([], dtype="f4"),
        np.zeros((0, 3)),
        np.array(3),
        np.array([True, False]),
        np.arange(10, dtype="u2")[::2],
        np.array([1 + 2j], dtype=">c8"),
        np.array([0.5, 1.5], dtype="f2"),
        np.frombuffer(b"\x01\x02", dtype="u1"),  # read-only: protocol 5 writes its bytes as bytes, not bytearray
        np.arange(24, dtype="i1").reshape(2, 3, 4),
    ],
    "scalars": [np.float64(3.5), np.int64(-5), np.bool_(True), np.uint8(7), np.complex128(1 - 1j), np.float32(0.25)],
    "shared": [[1, 2]] * 3,  # one list memoized and referenced again
    "long": list(range(2500)),  # APPENDS in batches of 1000
}


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_loads_like_pickle(kind, protocol):
    data = pickle.dumps(KINDS[kind], protocol=protocol)
    assert same(loads_pickle(data), pickle.loads(data))


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_finediving_and_logo_files_load_like_pickle(tmp_path, protocol):
    files = sorted((make_finediving(tmp_path / "fd", protocol) / "Annotations").glob("*.pkl"))
    files += sorted(make_logo(tmp_path / "logo").glob("*.pkl"))
    assert len(files) == 7
    for path in files:
        with path.open("rb") as f:
            assert same(load_pickle(path), pickle.load(f)), path


def test_python2_binary_pickle():
    """What numpy 1.x under Python 2 wrote (protocol 2): byte strings as SHORT_BINSTRING, read as latin1 text."""
    data = (
        b"\x80\x02}q\x00(U\x05videoq\x01cnumpy.core.multiarray\n_reconstruct\nq\x02cnumpy\nndarray\nq\x03K\x00\x85"
        b"U\x01b\x87Rq\x04(K\x01K\x02\x85cnumpy\ndtype\nq\x05U\x02i8K\x00K\x01\x87Rq\x06(K\x03U\x01<NNN"
        b"J\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89U\x10" + np.array([1, 300]).astype("<i8").tobytes() + b"tb"
        b"U\x05scoreq\x07cnumpy.core.multiarray\nscalar\nq\x08h\x05U\x02f8K\x00K\x01\x87Rq\t(K\x03U\x01<NNN"
        b"J\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tbU\x08" + struct.pack("<d", 81.5) + b"\x86Rq\nu."
    )
    assert same(loads_pickle(data), pickle.loads(data, encoding="latin1"))
    assert loads_pickle(data)["video"].tolist() == [1, 300] and loads_pickle(data)["score"] == 81.5


def test_arrays_are_writable_copies():
    value = loads_pickle(pickle.dumps({"a": np.arange(3)}, protocol=5))["a"]
    value[0] = 7
    assert value.tolist() == [7, 1, 2]


def test_the_assembler_writes_what_numpy_reads():
    """The crafted payloads below differ from these benign ones only in the field they tamper with."""
    for payload in (
        whole(array((2,), dtype("i8"), np.array([1, 2]).tobytes())),
        whole(frombuffer((2,), dtype("i8"), np.array([1, 2]).tobytes())),
    ):
        assert same(loads_pickle(payload), pickle.loads(payload))


# --- crafted files are refused


class Evil:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


class Plain:
    pass


def test_object_dtype_array_from_raw_bytes(tmp_path):
    refused(tmp_path, whole(array((1,), dtype("O8", "|"), b"A" * 8)), r"refused numpy dtype 'O8'.* opcode REDUCE")
    refused(tmp_path, whole(frombuffer((1,), dtype("O8", "|"), b"A" * 8)), r"refused numpy dtype 'O8'")
    scalar = glob("numpy.core.multiarray", "scalar") + tup(dtype("O8", "|"), raw(b"A" * 8)) + REDUCE
    refused(tmp_path, whole(scalar), r"refused numpy dtype 'O8'")


@pytest.mark.parametrize(
    "dt, found",
    [
        (dtype("i8", flags=63), r"numpy dtype state .* for int64"),  # 'holds objects' and more set on an int
        (dtype("i8", flags=1), r"numpy dtype state"),
        (dtype("V8", "|", flags=63), r"numpy dtype 'V8'"),  # a void dtype (the old allow-list admitted it)
        (dtype("i8", names=tup(text("f0"))), r"numpy dtype state"),
        (dtype("i8", fields=b"}" + text("f0") + tup(dtype("O8", "|"), num(0)) + b"s"), r"numpy dtype 'O8'"),
        (dtype("i8", order="!"), r"numpy dtype state"),
        (dtype("i8") + tup(num(3), text("<"), NONE, NONE, NONE, num(-1), num(-1), num(0)) + BUILD, "BUILD of"),
    ],
)
def test_dtype_state_tampering(tmp_path, dt, found):
    err = refused(tmp_path, whole(array((1,), dt, b"A" * 8)), found)
    assert "opcode BUILD" in str(err) or "opcode REDUCE" in str(err)


@pytest.mark.parametrize(
    "payload",
    [
        whole(array((2**30, 8), dtype("f8"), b"")),  # 8 GiB declared by a 200-byte file
        whole(array((2**62, 2**62), dtype("f8"), b"")),
        whole(frombuffer((2**30,), dtype("f8"), b"")),
        whole(frombuffer((3,), dtype("f8"), b"\0" * 8)),  # shape and bytes disagree
        whole(array((-1,), dtype("f8"), b"\0" * 8)),
        whole(array((1,) * 40, dtype("f8"), b"\0" * 8)),
    ],
)
def test_declared_sizes_the_file_cannot_hold(tmp_path, payload):
    refused(tmp_path, payload, r"refused numpy array (shape|of shape)")


def test_bytes_reused_by_many_arrays_run_out_of_budget(tmp_path):
    """One 64 KiB bytes object memoized and turned into 40 arrays: 2.5 MiB from a 64 KiB file."""
    new = glob("numpy._core.numeric", "_frombuffer")
    first = new + tup(raw(b"\0" * 65536) + BINPUT + b"\x01", dtype("u1"), tup(num(65536)), text("C")) + REDUCE
    again = new + tup(BINGET + b"\x01", dtype("u1"), tup(num(65536)), text("C")) + REDUCE
    with pytest.raises(UnsafePickleError, match="more than a file of"):
        loads_pickle(whole(EMPTY_LIST, MARK, first, again * 40, b"e"))


def test_globals_that_run_code(tmp_path):
    marker = tmp_path / "pwned"
    call = tup(text(f"touch {marker}")) + REDUCE
    err = refused(tmp_path, whole(glob("posix", "system"), call), r"refused to load posix\.system: ")
    assert "(at byte 2, opcode GLOBAL)" in str(err)
    stacked = b"\x8c\x02os\x8c\x06system\x93"  # protocol 4 STACK_GLOBAL
    refused(tmp_path, b"\x80\x04" + stacked + call + STOP, r"refused to load os\.system: .*opcode STACK_GLOBAL")
    refused(tmp_path, pickle.dumps(Evil(str(marker))), r"refused to load (posix|os)\.system")
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload, found",
    [
        (whole(glob("builtins", "bytearray"), tup(num(2**33)), REDUCE), r"refused to load builtins\.bytearray"),
        (whole(glob("builtins", "eval"), tup(text("1")), REDUCE), r"refused to load builtins\.eval"),
        (whole(glob("builtins", "getattr"), tup(NONE, text("x")), REDUCE), r"refused to load builtins\.getattr"),
        (whole(glob("builtins", "set"), tup(), REDUCE), r"refused to load builtins\.set"),
        (whole(glob("numpy", "ndarray"), tup(tup(num(9))), REDUCE), r"calling numpy\.ndarray"),
        (whole(glob("numpy", "dtype")), r"the global numpy\.dtype used as a value"),
        (whole(glob("_codecs", "encode"), tup(text("x"), text("rot13")), REDUCE), "only latin1"),
        (whole(glob("builtins", "bytes"), tup(num(2**33)), REDUCE), r"refused builtins\.bytes\(8589934592\)"),
        (
            whole(
                glob("numpy.core.multiarray", "_reconstruct"), tup(glob("numpy", "dtype"), tup(), raw(b"b")), REDUCE
            ),
            r"_reconstruct of numpy\.dtype",
        ),
        (whole(NONE, tup(), REDUCE), "REDUCE of None"),
        (whole(EMPTY_LIST, tup(NONE), BUILD), "BUILD of a list"),
    ],
)
def test_reduce_and_build_of_anything_else(tmp_path, payload, found):
    refused(tmp_path, payload, found)


@pytest.mark.parametrize(
    "payload, found",
    [
        (pickle.dumps(Plain(), protocol=2), r"refused to load tests\.data_builders\.test_safe_pickle\.Plain"),
        (pickle.dumps(Plain(), protocol=0), r"refused to load copy_reg\._reconstructor"),
        (pickle.dumps({1, 2}, protocol=4), "refused opcode EMPTY_SET"),
        (pickle.dumps(frozenset(), protocol=4), "refused opcode FROZENSET"),
        (b"\x80\x02(cnumpy\ndtype\no.", "refused opcode OBJ"),
        (b"\x80\x02\x82\x01.", "refused opcode EXT1"),
        (b"\x80\x02P1\n.", "refused opcode PERSID"),
        (b"\x80\x05\x97.", "refused opcode NEXT_BUFFER"),
        (b"(i__main__\nPlain\n.", "refused opcode INST"),
    ],
)
def test_other_opcodes(tmp_path, payload, found):
    refused(tmp_path, payload, found)


def test_structure_bounds(tmp_path):
    deep: list = []
    for _ in range(MAX_DEPTH + 5):
        deep = [deep]
    refused(tmp_path, pickle.dumps(deep, protocol=2), "nested deeper than")
    ok: list = []
    for _ in range(MAX_DEPTH - 1):
        ok = [ok]
    assert loads_pickle(pickle.dumps(ok)) == ok
    loop: list = []
    loop.append(loop)
    refused(tmp_path, pickle.dumps(loop), "put inside itself")
    a: list = []
    b = [a]
    a.append(b)
    refused(tmp_path, pickle.dumps(b), "already inside another container")
    refused(tmp_path, pickle.dumps(2**70), "int of 71 bits")
    key = whole(b"}", EMPTY_LIST, NONE, b"s")
    refused(tmp_path, key, r"a list of 0 items as a dict key")
    refused(tmp_path, whole(array((2,), dtype("b1", "|"), b"\x01\x02")), "bool array with bytes")


@pytest.mark.parametrize(
    "payload",
    [b"", b"not a pickle", b"\x80\x05", pickle.dumps([1, 2])[:-3], b"\x80\x06N.", b"NN.", b"a.", b"h\x05.", b"(N."],
)
def test_unreadable(tmp_path, payload):
    refused(tmp_path, payload, "not a readable pickle")


def test_missing_file(tmp_path):
    with pytest.raises(UnsafePickleError, match="absent.pkl: cannot read"):
        load_pickle(tmp_path / "absent.pkl")
