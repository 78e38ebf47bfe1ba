"""ex4d.io.json_input: every malformed or hostile JSON document is one Ex4dError line naming the document."""

from __future__ import annotations

import os

import numpy as np
import pytest

from ex4d.errors import Ex4dError
from ex4d.io.json_input import (expect, float_array, json_depth, number, optional, parse_json, read_json,
                                require)


def _err(fn, *a, **k) -> str:
    with pytest.raises(Ex4dError) as e:
        fn(*a, **k)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_parse_ok_and_bom():
    assert parse_json(b'{"a": [1, 2.5, "x", null, true]}', "doc") == {"a": [1, 2.5, "x", None, True]}
    assert parse_json("\ufeff[1]", "doc") == [1]
    assert parse_json(b"\xef\xbb\xbf[1]", "doc") == [1]


@pytest.mark.parametrize("data, words", [
    (b"", "empty"),
    (b"   \n", "empty"),
    (b"{", "not valid JSON"),
    (b"{'a': 1}", "not valid JSON"),
    (b'{"a": 1,}', "not valid JSON"),
    (b"\xff\xfe[", "not UTF-8"),
    (b"[NaN]", "NaN"),
    (b'{"x": Infinity}', "Infinity"),
    (b"[" + b"9" * 5000 + b"]", "not valid JSON"),
    (b"[" * 100 + b"]" * 100, "nested"),
    (b"[" * 100_000, "nested"),            # would be RecursionError inside json
    (b'{"a":' * 5000 + b"1" + b"}" * 5000, "nested"),
])
def test_parse_refuses(data, words):
    msg = _err(parse_json, data, "my doc")
    assert msg.startswith("my doc:") and words in msg


def test_brackets_inside_strings_do_not_count():
    doc = '{"s": "' + "[" * 1000 + '"}'
    assert parse_json(doc, "doc")["s"] == "[" * 1000


def test_size_limit_and_depth_limit():
    assert "bytes" in _err(parse_json, b"[" + b"1," * 100 + b"1]", "doc", max_bytes=50)
    assert parse_json("[[[1]]]", "doc", max_depth=3) == [[[1]]]
    assert "nested" in _err(parse_json, "[[[[1]]]]", "doc", max_depth=3)
    assert json_depth({"a": [{"b": 1}]}) == 3 and json_depth(5) == 0


def test_read_json(tmp_path):
    p = tmp_path / "c.json"
    p.write_text('{"k": 1}')
    assert read_json(p, "--config") == {"k": 1}
    assert "no such file" in _err(read_json, tmp_path / "nope.json", "--config")
    assert "folder" in _err(read_json, tmp_path, "--config")
    big = tmp_path / "big.json"
    with open(big, "wb") as f:
        f.truncate(1000)
    assert "accepted" in _err(read_json, big, "--config", max_bytes=100)
    if os.geteuid() != 0:
        p.chmod(0)
        assert "permission" in _err(read_json, p, "--config")


def test_getters():
    obj = {"n": 3, "f": 2.5, "b": True, "s": "x", "l": [1, 2], "none": None}
    assert require(obj, "n", int, "doc") == 3
    assert require(obj, "n", float, "doc") == 3          # an int is a fine float
    assert "missing field 'zz'" in _err(require, obj, "zz", int, "doc")
    assert "expected an integer, got true/false" in _err(require, obj, "b", int, "doc")
    assert "expected a number, got a string" in _err(require, obj, "s", float, "doc")
    assert "expected an object, got an array" in _err(require, [1], "n", int, "doc")
    assert optional(obj, "none", int, "doc", default=7) == 7
    assert optional(obj, "absent", int, "doc", default=7) == 7
    assert expect("x", (str, list), "doc") == "x"
    assert number(5, "doc", integer=True, min=1) == 5
    assert "≥ 1" in _err(number, 0, "doc", integer=True, min=1)
    assert "> 0" in _err(number, 0.0, "doc", min=0, min_inclusive=False)
    assert "≤ 10" in _err(number, 11, "doc", max=10)
    assert "finite" in _err(number, float("inf"), "doc")


def test_float_array():
    a = float_array([[1, 0], [0, 1]], "K", (2, 2))
    assert a.dtype == np.float64 and a.shape == (2, 2)
    assert float_array([[[1]], [[2]]], "w", (None, 1, 1)).shape == (2, 1, 1)
    assert "[1]: expected an array of 2" in _err(float_array, [[1, 0], [0]], "K", (2, 2))
    assert "[0][1]: expected a number, got a string" in _err(float_array, [[1, "0"], [0, 1]], "K", (2, 2))
    assert "[0][0]: expected a number, got true/false" in _err(float_array, [[True, 0], [0, 1]], "K", (2, 2))
    assert "expected an array, got a number" in _err(float_array, [1, 2], "K", (2, 2))
    assert "K: expected an array, got a number" in _err(float_array, 3, "K", (2, 2))
    assert "unequal lengths" in _err(float_array, [1, [2]], "v", None)
