"""Reading JSON the user (or a client) hands us: bounded, validated, one-line errors.

Every JSON document ex4d reads — ``config.json``, ``cameras.json``, keyframe
``path.json``, job files, the web app's request bodies — goes through
:func:`parse_json` / :func:`read_json`, which refuse before use:

* documents larger than ``max_bytes`` (checked before reading a file),
* text that is not UTF-8 or not JSON (the line and column are named),
* nesting deeper than ``max_depth`` (CPython's parser itself would raise
  ``RecursionError`` on ~1000 levels; a body of 10 MB of ``[`` must not),
* ``NaN`` / ``Infinity`` (not JSON; Python accepts them by default),
* integers with thousands of digits.

The getters (:func:`require`, :func:`optional`, :func:`expect`,
:func:`number`, :func:`float_array`) check the structure of what was read and
name the offending field, e.g. ``"cameras.json: 'w2c'[3]: expected an array
of 4 numbers, got a string"``. All errors are :class:`ex4d.errors.Ex4dError`,
whose message is one line.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from ..errors import Ex4dError

__all__ = [
    "MAX_BYTES",
    "MAX_DEPTH",
    "parse_json",
    "read_json",
    "json_depth",
    "expect",
    "require",
    "optional",
    "number",
    "float_array",
    "type_name",
    "check_fields",
]

#: Default size limit of one JSON document (16 MiB).
MAX_BYTES = 16 << 20
#: Default nesting limit (an object inside an array inside … counts one level each).
MAX_DEPTH = 32

_NAMES = {dict: "an object", list: "an array", str: "a string", bool: "true/false", int: "an integer",
          float: "a number", type(None): "null"}


def type_name(value_or_type) -> str:
    """'an object', 'an array', 'a string', … for a JSON value or a Python type (for messages)."""
    t = value_or_type if isinstance(value_or_type, type) else type(value_or_type)
    return _NAMES.get(t, t.__name__)


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def json_depth(obj: Any) -> int:
    """Nesting depth of a parsed JSON value (a scalar is 0, ``[]`` is 1, ``[[1]]`` is 2); iterative."""
    best = 0
    stack = [(obj, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            depth += 1
            stack.extend((v, depth) for v in value.values())
        elif isinstance(value, list):
            depth += 1
            stack.extend((v, depth) for v in value)
        best = max(best, depth)
    return best


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON (write a number or null)")


def parse_json(data: bytes | str, what: str, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH,
               allow_nan: bool = False) -> Any:
    """The parsed JSON value of ``data``; :class:`Ex4dError` naming ``what`` when it is too big, malformed or too deep.

    ``data``: UTF-8 bytes (a BOM is accepted) or text. ``what``: how the message names
    the document, e.g. ``"--trajectory path.json"`` or ``"request body"``.
    """
    size = len(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)
    if size > max_bytes:
        raise Ex4dError(f"{what}: {size:,} bytes is more than the {max_bytes:,} accepted for a JSON document")
    if isinstance(data, (bytes, bytearray, memoryview)):
        try:
            text = bytes(data).decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise Ex4dError(f"{what}: not UTF-8 text (byte {e.start}); expected a JSON document") from None
    elif isinstance(data, str):
        text = data[1:] if data.startswith("\ufeff") else data
    else:
        raise TypeError(f"parse_json takes bytes or str, not {type(data).__name__}")
    if not text.strip():
        raise Ex4dError(f"{what}: empty; expected a JSON document")
    # A cheap upper bound before parsing: the parser recurses once per bracket.
    if text.count("[") + text.count("{") > max_depth and _bracket_depth(text) > max_depth:
        raise Ex4dError(f"{what}: nested more than {max_depth} levels deep; not an ex4d file")
    try:
        obj = json.loads(text, parse_constant=None if allow_nan else _reject_constant)
    except json.JSONDecodeError as e:
        raise Ex4dError(f"{what}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    except RecursionError:
        raise Ex4dError(f"{what}: nested too deeply; not an ex4d file") from None
    except ValueError as e:  # our NaN rejection, or Python's limit on huge integer literals
        raise Ex4dError(f"{what}: not valid JSON ({_one_line(e)})") from None
    depth = json_depth(obj)
    if depth > max_depth:  # pragma: no cover - the bracket scan catches these first
        raise Ex4dError(f"{what}: nested {depth} levels deep, more than the {max_depth} accepted")
    return obj


def _bracket_depth(text: str) -> int:
    """Largest bracket nesting in ``text``, ignoring brackets inside strings (stops early past any sane depth)."""
    depth = best = 0
    in_string = escape = False
    for ch in text:
        if in_string:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > best:
                best = depth
                if best > 10_000:
                    break
        elif ch in "]}":
            depth -= 1
    return best


def read_json(path: str | os.PathLike, what: str, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH,
              allow_nan: bool = False) -> Any:
    """The parsed JSON in file ``path``; :class:`Ex4dError` (one line, naming ``what``) for every way it can fail.

    The size is checked from the file system before anything is read.
    """
    path = Path(path)
    label = what if str(path) in what else f"{what} {path}"
    try:
        if path.is_dir():
            raise Ex4dError(f"{label}: is a folder; expected a JSON file")
        size = path.stat().st_size
        if size > max_bytes:
            raise Ex4dError(f"{label}: {size:,} bytes is more than the {max_bytes:,} accepted for a JSON file")
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)
    except FileNotFoundError:
        raise Ex4dError(f"{label}: no such file") from None
    except PermissionError:
        raise Ex4dError(f"{label}: cannot be read (permission denied)") from None
    except OSError as e:
        raise Ex4dError(f"{label}: cannot be read ({e.strerror or e})") from None
    return parse_json(data, label, max_bytes=max_bytes, max_depth=max_depth, allow_nan=allow_nan)


# ----------------------------------------------------------------------------- typed getters

def _is(value, types) -> bool:
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in types:  # JSON true is not a number
        return False
    if float in types and isinstance(value, int) and not isinstance(value, bool):
        return True  # 2 is a fine float
    return isinstance(value, types)


def _expected(types) -> str:
    types = types if isinstance(types, tuple) else (types,)
    names = []
    for t in types:
        n = type_name(t)
        if n not in names and not (t is int and float in types):
            names.append(n)
    return " or ".join(names)


def expect(value, types, what: str):
    """``value`` when it has one of ``types`` (bool is not a number); else :class:`Ex4dError` naming ``what``."""
    if not _is(value, types):
        raise Ex4dError(f"{what}: expected {_expected(types)}, got {type_name(value)}")
    return value


def require(obj, key: str, types, what: str):
    """``obj[key]`` checked against ``types``; :class:`Ex4dError` when ``obj`` is no object or lacks ``key``."""
    expect(obj, dict, what)
    if key not in obj:
        raise Ex4dError(f"{what}: missing field {key!r}")
    return expect(obj[key], types, f"{what}: {key!r}")


def optional(obj, key: str, types, what: str, default=None):
    """``obj[key]`` checked against ``types``, or ``default`` when absent or null."""
    expect(obj, dict, what)
    if obj.get(key) is None:
        return default
    return expect(obj[key], types, f"{what}: {key!r}")


def number(value, what: str, *, integer: bool = False, min: float | None = None, max: float | None = None,
           min_inclusive: bool = True) -> float | int:
    """A finite JSON number (an integer when ``integer``) within [``min``, ``max``]; else :class:`Ex4dError`."""
    expect(value, int if integer else float, what)
    if isinstance(value, float) and integer:  # pragma: no cover - expect() rejects floats for int
        raise Ex4dError(f"{what}: expected an integer, got {value!r}")
    if not math.isfinite(value):
        raise Ex4dError(f"{what}: must be finite, got {value!r}")
    if min is not None and (value < min or (value == min and not min_inclusive)):
        raise Ex4dError(f"{what}: must be {'≥' if min_inclusive else '>'} {min:g}, got {value!r}")
    if max is not None and value > max:
        raise Ex4dError(f"{what}: must be ≤ {max:g}, got {value!r}")
    return value


def float_array(value, what: str, shape: tuple[int | None, ...] | None = None):
    """``value`` (nested JSON arrays of numbers) as a finite float64 numpy array, checked against ``shape``.

    ``shape`` entries of None take any length, e.g. ``(None, 4, 4)`` for T matrices.
    """
    import numpy as np

    def walk(v, path, level):
        if isinstance(v, list):
            if shape is not None and level < len(shape) and shape[level] is not None and len(v) != shape[level]:
                raise Ex4dError(f"{what}{path}: expected an array of {shape[level]}, got {len(v)} entries")
            for i, x in enumerate(v):
                walk(x, f"{path}[{i}]", level + 1)
        elif not _is(v, float):
            raise Ex4dError(f"{what}{path}: expected a number, got {type_name(v)}")
        elif shape is not None and level < len(shape):
            raise Ex4dError(f"{what}{path}: expected an array, got a number")

    walk(value, "", 0)
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (ValueError, OverflowError):
        raise Ex4dError(f"{what}: arrays of unequal lengths; expected a regular array") from None
    if shape is not None:
        ok = arr.ndim == len(shape) and all(s is None or s == n for s, n in zip(shape, arr.shape))
        if not ok:
            want = "×".join("T" if s is None else str(s) for s in shape)
            raise Ex4dError(f"{what}: expected shape {want}, got {'×'.join(map(str, arr.shape)) or 'a number'}")
    if not np.all(np.isfinite(arr)):
        raise Ex4dError(f"{what}: holds non-finite values")
    return arr


# ----------------------------------------------------------------------------- dataclasses

def _check_annotation(value, ann, what: str):
    """``value`` checked against the type annotation ``ann`` (int, float, bool, str, X | None, dict, list, tuple,
    a dataclass); nested dataclasses become dicts checked recursively. Returns the value (tuples from lists)."""
    import dataclasses
    import types
    import typing

    origin = typing.get_origin(ann)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(ann)
        if value is None and type(None) in options:
            return None
        errors = []
        for opt in options:
            if opt is type(None):
                continue
            try:
                return _check_annotation(value, opt, what)
            except Ex4dError as e:
                errors.append(e)
        names = " or ".join(_ann_name(o) for o in options)
        raise Ex4dError(f"{what}: expected {names}, got {type_name(value)}" if len(errors) != 1 else str(errors[0]))
    if ann is typing.Any:
        return value
    if dataclasses.is_dataclass(ann):
        check_fields(ann, value, what)
        return value
    if ann in (int, float, str, bool):
        expect(value, ann, what)
        if ann is float and not math.isfinite(value):
            raise Ex4dError(f"{what}: must be finite, got {value!r}")
        return value
    if ann is dict or origin is dict:
        return expect(value, dict, what)
    if ann in (list, tuple) or origin in (list, tuple):
        expect(value, list if not isinstance(value, tuple) else tuple, what)
        args = typing.get_args(ann)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise Ex4dError(f"{what}: expected {len(args)} entries, got {len(value)}")
            return tuple(_check_annotation(v, a, f"{what}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        if args:
            item = args[0]
            value = [_check_annotation(v, item, f"{what}[{i}]") for i, v in enumerate(value)]
        return tuple(value) if (ann is tuple or origin is tuple) else value
    return value  # annotations we do not model are left to the dataclass's own checks


def _ann_name(ann) -> str:
    import dataclasses

    if ann is type(None):
        return "null"
    if dataclasses.is_dataclass(ann):
        return "an object"
    return type_name(ann) if isinstance(ann, type) else str(ann)


def check_fields(cls, obj, what: str) -> dict:
    """``obj`` (a JSON object meant for dataclass ``cls``) with every field's type checked; unknown keys refused.

    Field types come from ``cls``'s annotations (``int``, ``float``, ``bool``, ``str``, ``X | None``,
    ``dict``, ``list``/``tuple`` of X, nested dataclasses). Values are checked, not converted: the
    dataclass's own ``__post_init__`` still checks ranges. Returns a new dict (nested dataclass fields stay
    dicts; tuple fields become tuples).
    """
    import dataclasses
    import typing

    expect(obj, dict, what)
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(obj) - fields)
    if unknown:
        raise Ex4dError(f"{what}: unknown field(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(fields))}")
    return {k: _check_annotation(v, hints[k], f"{what}: {k!r}") for k, v in obj.items()}
