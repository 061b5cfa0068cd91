"""Read annotation pickles (FineDiving, LOGO) without unpickling them.

`pickle.load` calls whatever the file names, and an allow-list of globals is not enough: numpy's own names let a
crafted file reset a dtype's flags and build an object array from raw bytes (a segfault), or declare an 8 GiB
array in a 33-byte file. So nothing here goes through pickle's object model. `pickletools.genops` decodes the
opcode stream without executing anything, and a small stack machine builds exactly what these annotation files
hold:

- None, bool, int (64 bits at most), float, str, bytes; lists, tuples and dicts of them, nested at most
  `MAX_DEPTH` deep (dict keys: a scalar or a short flat tuple of scalars, like FineDiving's (video, instance));
- numpy arrays and scalars of plain numeric dtypes (bool, int, uint, float, complex). The names numpy's pickles
  use (`_reconstruct` with its BUILD state, `scalar`, `_frombuffer`, `dtype`, `_codecs.encode` for the bytes)
  are matched as names, never imported; their arguments are checked, and the array is made here with
  `np.frombuffer` on a copy of its bytes.

Everything else (any other global or opcode, object/structured/string dtypes, a dtype state other than numpy's
own for a plain number type, out-of-band buffers, sets, class instances) is refused with `UnsafePickleError`
naming the file, the byte offset of the opcode and what was found. Memory is bounded by the file: an array's
shape times its itemsize must equal the bytes the file gives it, no dimension may exceed the file's size, and
all bytes made from the file's data together may not exceed twice its size. A container cannot change once it is
inside another, so the result has no cycles and its depth is known as it is built.

Not read: Python 2 text pickles (protocol 0) whose strings hold non-ASCII bytes, since `genops` decodes those as
ASCII; Python 2 binary pickles (protocols 1-2) are read, their byte strings as latin1 text as `pickle` does.
"""

from __future__ import annotations

import io
import math
import pickle
import pickletools
import re
from pathlib import Path
from typing import Any

import numpy as np

MAX_DEPTH = 64  # containers inside containers (FineDiving needs 3)
MAX_NDIM = 32  # numpy's own limit is 64
MAX_KEY_ITEMS = 16  # a dict key tuple's length: hashing a long tuple on every insertion would be quadratic
MAX_PROTOCOL = 5
ALLOCATION_SLACK = 4096  # bytes a tiny file may still allocate beyond twice its size
_INT_RANGE = (-(2**63), 2**64 - 1)  # numpy's int64 .. uint64
_DTYPE_NAME = re.compile(r"[biufc](1|2|4|8|16|32)")  # numpy pickles a dtype as kind + itemsize, e.g. "i8"

# the globals numpy pickles name, across numpy 1.x (numpy.core) and 2.x (numpy._core), and what each one is here
_GLOBALS = {
    **{(f"numpy.{core}.multiarray", "_reconstruct"): "reconstruct" for core in ("core", "_core")},
    **{(f"numpy.{core}.multiarray", "scalar"): "scalar" for core in ("core", "_core")},
    **{(f"numpy.{core}.numeric", "_frombuffer"): "frombuffer" for core in ("core", "_core")},  # protocol 5
    ("numpy", "ndarray"): "ndarray",
    ("numpy", "dtype"): "dtype",
    ("_codecs", "encode"): "encode",  # protocols 0-2 write bytes as `_codecs.encode(text, "latin1")`
    ("__builtin__", "bytes"): "bytes",  # ... and empty bytes as `bytes()`
    ("builtins", "bytes"): "bytes",
}
_OPCODE_GROUPS = {
    "_const": "NONE NEWTRUE NEWFALSE FLOAT BINFLOAT STRING BINSTRING SHORT_BINSTRING UNICODE BINUNICODE "
    "SHORT_BINUNICODE BINUNICODE8 BINBYTES SHORT_BINBYTES BINBYTES8 BYTEARRAY8",
    "_int": "INT BININT BININT1 BININT2 LONG LONG1 LONG4",
    "_put": "PUT BINPUT LONG_BINPUT MEMOIZE",
    "_get": "GET BINGET LONG_BINGET",
    "_tuple": "EMPTY_TUPLE TUPLE TUPLE1 TUPLE2 TUPLE3",
    "_list": "EMPTY_LIST LIST",
    "_dict": "EMPTY_DICT DICT",
    "_append": "APPEND APPENDS",
    "_setitem": "SETITEM SETITEMS",
    "_global": "GLOBAL STACK_GLOBAL",
    "_stack": "MARK POP POP_MARK DUP",
    "_header": "PROTO FRAME",
    "_reduce": "REDUCE",
    "_build": "BUILD",
}
_HANDLERS = {op: method for method, ops in _OPCODE_GROUPS.items() for op in ops.split()}
_CONST = {"NONE": None, "NEWTRUE": True, "NEWFALSE": False}
_WHY = (
    "annotation pickles hold only builtin containers and numbers and numpy arrays of plain numeric dtypes "
    "(the file may be tampered with or not the official one)"
)


class UnsafePickleError(pickle.UnpicklingError):
    """An annotation pickle this reader refuses (something annotation files do not hold) or cannot read."""


class _Global:
    """A global the file names, kept as a name: only ever the callable of a REDUCE, never a value."""

    def __init__(self, module: str, name: str):
        self.module, self.name, self.kind = module, name, _GLOBALS[(module, name)]

    def __repr__(self) -> str:
        return f"{self.module}.{self.name}"


class _ArgTuple(tuple):
    """A tuple holding a global (the arguments of `_reconstruct`): a REDUCE argument, never a value."""


class _DtypeBox:
    """A numpy dtype between its REDUCE and its BUILD (which may set the byte order)."""

    def __init__(self, dtype: np.dtype):
        self.dtype, self.built = dtype, False


class _ArrayBox:
    """An array between `_reconstruct` and the BUILD that gives its shape, dtype and bytes."""

    array: np.ndarray | None = None


def _show(v: Any, inner: bool = False) -> str:
    """A short description of a value for an error message (never a huge repr); a short tuple shows its items."""
    if isinstance(v, (str, bytes)):
        return repr(v[:40]) + ("..." if len(v) > 40 else "")
    if isinstance(v, int) and not isinstance(v, bool) and v.bit_length() > 64:
        return f"an int of {v.bit_length()} bits"
    if isinstance(v, _Global):
        return f"the global {v!r}"
    if isinstance(v, tuple) and not inner and len(v) <= 10:
        return "(" + ", ".join(_show(x, inner=True) for x in v) + ("," if len(v) == 1 else "") + ")"
    if isinstance(v, _ArgTuple):
        return "a tuple holding a global"
    if isinstance(v, (list, dict, tuple)):
        return f"a {type(v).__name__} of {len(v)} items"
    if isinstance(v, (_DtypeBox, _ArrayBox)):
        return "a numpy dtype" if isinstance(v, _DtypeBox) else "a numpy array"
    return repr(v) if v is None or isinstance(v, (bool, int, float, np.dtype)) else type(v).__name__


class _Reader:
    """The stack machine over one file's opcodes; `run` returns the value or raises UnsafePickleError."""

    def __init__(self, data: bytes, source: str):
        self.data, self.source = data, source
        self.stack: list = []
        self.marks: list[list] = []
        self.memo: dict[int, Any] = {}
        self.containers: dict[int, list] = {}  # id -> [container, depth, frozen]; holds them so ids stay unique
        self.budget = 2 * len(data) + ALLOCATION_SLACK
        self.pos, self.op = 0, "start"
        self.handlers = {op: getattr(self, method) for op, method in _HANDLERS.items()}

    def fail(self, problem: str) -> UnsafePickleError:
        return UnsafePickleError(f"{self.source}: {problem} (at byte {self.pos}, opcode {self.op})")

    def refuse(self, what: str) -> UnsafePickleError:
        return self.fail(f"refused {what}: {_WHY}")

    def run(self) -> Any:
        ops = pickletools.genops(io.BytesIO(self.data))
        while True:
            try:
                op, arg, pos = next(ops)
            except ValueError as e:  # truncated, an unknown opcode, a bad argument
                raise self.fail(f"not a readable pickle ({e})") from None
            self.pos, self.op = pos, op.name
            if op.name == "STOP":
                return self.stop()
            handler = self.handlers.get(op.name)
            if handler is None:
                raise self.refuse(f"opcode {op.name}")
            handler(arg)

    def stop(self) -> Any:
        if self.marks or len(self.stack) != 1:
            raise self.fail("not a readable pickle (STOP with an open MARK or more than one value on the stack)")
        return self.member(self.stack[0])[0]

    # --- the stack, the memo and the marks
    def pop(self) -> Any:
        if not self.stack:
            raise self.fail("not a readable pickle (the stack is empty)")
        return self.stack.pop()

    def pop_mark(self) -> list:
        if not self.marks:
            raise self.fail("not a readable pickle (no MARK to pop to)")
        items, self.stack = self.stack, self.marks.pop()
        return items

    def _stack(self, arg) -> None:
        if self.op == "MARK":
            self.marks.append(self.stack)
            self.stack = []
        elif self.op == "DUP":
            top = self.pop()
            self.stack += [top, top]
        elif self.op == "POP" and self.stack:
            self.stack.pop()
        else:  # POP_MARK, or POP on an empty stack (pickle pops the mark then)
            self.pop_mark()

    def _header(self, arg) -> None:
        if self.op == "PROTO" and not 0 <= arg <= MAX_PROTOCOL:
            raise self.fail(f"not a readable pickle (protocol {arg})")

    def _put(self, arg) -> None:
        if not self.stack:
            raise self.fail("not a readable pickle (memoizing an empty stack)")
        index = len(self.memo) if arg is None else arg
        if index < 0:
            raise self.fail(f"not a readable pickle (memo index {index})")
        self.memo[index] = self.stack[-1]

    def _get(self, arg) -> None:
        if arg not in self.memo:
            raise self.fail(f"not a readable pickle (memo index {arg} was never set)")
        self.stack.append(self.memo[arg])

    # --- scalars
    def _const(self, arg) -> None:
        self.stack.append(_CONST[self.op] if self.op in _CONST else arg)

    def _int(self, arg) -> None:
        if not isinstance(arg, bool) and not _INT_RANGE[0] <= arg <= _INT_RANGE[1]:
            raise self.refuse(f"{_show(arg)} (beyond 64 bits)")
        self.stack.append(arg)

    def spend(self, nbytes: int, what: str) -> None:
        """Count an allocation against what the file's size can justify."""
        self.budget -= nbytes
        if self.budget < 0:
            raise self.refuse(f"{what} of {nbytes} bytes: more than a file of {len(self.data)} bytes can hold")

    # --- containers
    def member(self, v: Any, in_tuple: bool = False) -> tuple[Any, int]:
        """`v` as it goes into a container (or is returned): a box becomes its dtype or array, a container freezes;
        a global may only sit in a tuple (REDUCE arguments). Returns the value and its depth."""
        if isinstance(v, _DtypeBox):
            return v.dtype, 0
        if isinstance(v, _ArrayBox):
            if v.array is None:
                raise self.refuse("a numpy array used before its BUILD gave it data")
            return v.array, 0
        if isinstance(v, (_Global, _ArgTuple)) and not in_tuple:
            raise self.refuse(f"{_show(v)} used as a value")
        info = self.containers.get(id(v))
        if info is None:
            return v, 0
        info[2] = True
        return v, info[1]

    def new_container(self, c: list | dict | tuple, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise self.refuse(f"containers nested deeper than {MAX_DEPTH}")
        self.containers[id(c)] = [c, depth, False]
        self.stack.append(c)

    def _tuple(self, arg) -> None:
        n = {"EMPTY_TUPLE": 0, "TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}.get(self.op)
        raw = self.pop_mark() if n is None else [self.pop() for _ in range(n)][::-1]
        items = [self.member(v, in_tuple=True) for v in raw]
        values = [v for v, _ in items]
        kind = _ArgTuple if any(isinstance(v, (_Global, _ArgTuple)) for v in values) else tuple
        self.new_container(kind(values), 1 + max((d for _, d in items), default=0))

    def _list(self, arg) -> None:
        items = [self.member(v) for v in (self.pop_mark() if self.op == "LIST" else [])]
        self.new_container([v for v, _ in items], 1 + max((d for _, d in items), default=0))

    def _dict(self, arg) -> None:
        items = self.pop_mark() if self.op == "DICT" else []
        self.new_container({}, 1)
        self.fill_dict(items)

    def top(self, kind: type) -> tuple[Any, list]:
        """The list or dict on top of the stack (items are added to it) and its [container, depth, frozen]."""
        target = self.stack[-1] if self.stack else None
        info = self.containers.get(id(target))
        if type(target) is not kind or info is None:
            raise self.refuse(f"{self.op} on {_show(target)}")
        if info[2]:
            raise self.refuse(f"{self.op} on a {kind.__name__} already inside another container (pickle never does)")
        return target, info

    def grow(self, info: list, items: list) -> list:
        """The values of `items`, checked and frozen; the depth of the container they go into is updated."""
        out = []
        for v in items:
            if v is info[0]:
                raise self.refuse(f"a {type(v).__name__} put inside itself")
            value, depth = self.member(v)
            info[1] = max(info[1], depth + 1)
            out.append(value)
        if info[1] > MAX_DEPTH:
            raise self.refuse(f"containers nested deeper than {MAX_DEPTH}")
        return out

    def _append(self, arg) -> None:
        items = [self.pop()] if self.op == "APPEND" else self.pop_mark()
        target, info = self.top(list)
        target.extend(self.grow(info, items))

    def _setitem(self, arg) -> None:
        self.fill_dict([self.pop(), self.pop()][::-1] if self.op == "SETITEM" else self.pop_mark())

    def fill_dict(self, items: list) -> None:
        if len(items) % 2:
            raise self.fail(f"not a readable pickle ({self.op} with an odd number of items)")
        target, info = self.top(dict)
        values = self.grow(info, items)
        for key, value in zip(values[::2], values[1::2]):
            self.check_key(key)
            target[key] = value

    def check_key(self, key: Any) -> None:
        scalars = (type(None), bool, int, float, str, bytes, np.generic)
        flat = isinstance(key, tuple) and len(key) <= MAX_KEY_ITEMS and all(isinstance(k, scalars) for k in key)
        if not (isinstance(key, scalars) or flat):
            raise self.refuse(f"{_show(key)} as a dict key (keys are scalars or short tuples of scalars)")

    # --- globals and the numpy constructors
    def _global(self, arg) -> None:
        if self.op == "GLOBAL":
            module, _, name = arg.partition(" ")
        else:
            name, module = self.pop(), self.pop()
            if not isinstance(module, str) or not isinstance(name, str):
                raise self.refuse(f"STACK_GLOBAL of {_show(module)}, {_show(name)}")
        if (module, name) not in _GLOBALS:
            raise self.fail(f"refused to load {module}.{name}: {_WHY}")
        self.stack.append(_Global(module, name))

    def _reduce(self, arg) -> None:
        args, func = self.pop(), self.pop()
        if not isinstance(func, _Global) or not isinstance(args, tuple):
            raise self.refuse(f"REDUCE of {_show(func)} with {_show(args)}")
        make = getattr(self, f"make_{func.kind}", None)
        if make is None:
            raise self.refuse(f"calling {func!r}")
        self.stack.append(make(func, args))

    def signature(self, func: _Global, args: tuple, *types) -> None:
        if len(args) != len(types) or not all(isinstance(a, t) for a, t in zip(args, types)):
            raise self.refuse(f"{func!r}({', '.join(map(_show, args))})")

    def make_bytes(self, func: _Global, args: tuple) -> bytes:
        self.signature(func, args)
        return b""

    def make_encode(self, func: _Global, args: tuple) -> bytes:
        self.signature(func, args, str, str)
        if args[1] not in ("latin1", "latin-1") or max(args[0], default="\0") > "\xff":
            raise self.refuse(f"{func!r}({', '.join(map(_show, args))}) (only latin1 text encodes array bytes)")
        self.spend(len(args[0]), "bytes")
        return args[0].encode("latin1")

    def make_dtype(self, func: _Global, args: tuple) -> _DtypeBox:
        self.signature(func, args, str, int, int)  # (name, align, copy) as numpy writes them
        if not _DTYPE_NAME.fullmatch(args[0]):
            raise self.refuse(f"numpy dtype {args[0]!r}")
        try:
            dtype = np.dtype(args[0])
        except TypeError:  # a kind and size numpy has no type for, e.g. "i16"
            raise self.refuse(f"numpy dtype {args[0]!r}") from None
        return _DtypeBox(dtype)

    def make_reconstruct(self, func: _Global, args: tuple) -> _ArrayBox:
        self.signature(func, args, _Global, tuple, (bytes, str))
        if args[0].kind != "ndarray":
            raise self.refuse(f"{func!r} of {args[0]!r} (only numpy.ndarray)")
        return _ArrayBox()

    def make_scalar(self, func: _Global, args: tuple) -> np.generic:
        self.signature(func, args, np.dtype, (bytes, str))
        return self.array(args[1], args[0], (), "C")[()]

    def make_frombuffer(self, func: _Global, args: tuple) -> np.ndarray:
        self.signature(func, args, (bytes, bytearray), np.dtype, tuple, str)
        if args[3] not in ("C", "F"):
            raise self.refuse(f"array order {args[3]!r}")
        array = self.array(args[0], args[1], args[2], args[3])
        array.flags.writeable = isinstance(args[0], bytearray)  # numpy writes a read-only array's bytes as bytes
        return array

    def _build(self, arg) -> None:
        state = self.pop()
        target = self.stack[-1] if self.stack else None
        if isinstance(target, _DtypeBox) and not target.built:
            target.dtype, target.built = self.dtype_state(target.dtype, state), True
        elif isinstance(target, _ArrayBox) and target.array is None:
            if not isinstance(state, tuple) or len(state) not in (4, 5) or (len(state) == 5 and state[0] != 1):
                raise self.refuse(f"numpy array state {_show(state)}")
            shape, dtype, fortran, raw = state[-4:]
            if not isinstance(dtype, np.dtype) or not isinstance(fortran, int) or not isinstance(raw, (bytes, str)):
                raise self.refuse(f"numpy array state ({_show(dtype)}, {_show(fortran)}, {_show(raw)})")
            array = self.array(raw, dtype, shape, "F" if fortran else "C")
            # numpy's own __setstate__ (numpy 2) turns a non-native byte order into native, same values: so does this
            native = dtype.newbyteorder("=")
            target.array = array if dtype.isnative else array.byteswap(inplace=True).view(native)
        else:
            raise self.refuse(f"BUILD of {_show(target)} (only a numpy dtype or array, once)")

    def dtype_state(self, dtype: np.dtype, state: Any) -> np.dtype:
        """The dtype with the byte order of numpy's state (3, order, None, None, None, -1, -1, 0); any other state
        (fields, a subarray, flags such as 'holds objects') is what a crafted file would use to break numpy."""
        plain = (3, None, None, None, None, -1, -1, 0)
        if (
            not isinstance(state, tuple)
            or len(state) != len(plain)
            or any(type(s) is not type(p) or s != p for i, (s, p) in enumerate(zip(state, plain)) if i != 1)
            or state[1] not in ("<", ">", "|", "=")
        ):
            raise self.refuse(f"numpy dtype state {_show(state)} for {dtype} (only a byte order is accepted)")
        return dtype.newbyteorder(state[1]) if state[1] in "<>" else dtype

    def array(self, raw: bytes | bytearray | str, dtype: np.dtype, shape: Any, order: str) -> np.ndarray:
        """A writable array of `shape` from the bytes the file gave, or a refusal if they do not match."""
        if dtype.kind not in "biufc" or dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None:
            raise self.refuse(f"numpy dtype {dtype}")  # cannot happen: only make_dtype makes dtypes
        if (
            not isinstance(shape, tuple)
            or len(shape) > MAX_NDIM
            or not all(isinstance(d, int) and 0 <= d <= len(self.data) for d in shape)
        ):
            raise self.refuse(f"numpy array shape {_show(shape)} (a file of {len(self.data)} bytes)")
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes != len(raw):
            raise self.refuse(f"numpy array of shape {shape} and dtype {dtype} ({nbytes} bytes) from {len(raw)} bytes")
        if isinstance(raw, str):  # Python 2 pickles give the bytes as latin1 text
            raw = self.make_encode(_Global("_codecs", "encode"), (raw, "latin1"))
        if dtype.kind == "b" and raw.translate(None, b"\0\1"):
            raise self.refuse("numpy bool array with bytes other than 0 and 1")
        self.spend(nbytes, f"numpy array {shape} {dtype}")
        return np.frombuffer(bytearray(raw), dtype=dtype).reshape(shape, order=order)


def loads_pickle(data: bytes, source: str = "<bytes>") -> Any:
    """The value of an annotation pickle's bytes; UnsafePickleError (naming `source`) for anything else."""
    return _Reader(bytes(data), source).run()


def load_pickle(path: str | Path) -> Any:
    """Read an annotation pickle file; UnsafePickleError names the file, the byte offset and what was refused."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise UnsafePickleError(f"{path}: cannot read ({e.strerror or e})") from None
    return loads_pickle(data, str(path))
