"""The shared validators (issue 13): one per kind of value, the rules every boundary of the workbench uses."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from workbench import checks


@pytest.mark.parametrize("value, expected", [
    (0.5, 0.5), (1, 1.0), (np.float32(0.25), 0.25), (np.int64(3), 3.0), ("0.9", 0.9), (" 1e-3 ", 1e-3),
    ("1_000", 1000.0)])
def test_numbers_convert_clean_text_and_numpy(value, expected):
    out = checks.number(value, "x")
    assert out == expected and type(out) is float


@pytest.mark.parametrize("value, message", [
    (True, "x: must be a finite number, got True (bool)"),
    (np.bool_(False), "x: must be a finite number, got False (bool)"),
    (1 + 2j, "x: must be a finite number, got (1+2j) (complex)"),
    ("abc", "x: must be a finite number, got 'abc' (str)"),
    ("", "x: must be a finite number, got '' (str)"),
    (None, "x: must be a finite number, got None (NoneType)"),
    (float("nan"), "x: must be a finite number, got nan"),
    ("inf", "x: must be a finite number, got 'inf' (str)"),
    ([1.0], "x: must be a finite number, got [1.0] (list)"),
])
def test_numbers_refuse_what_is_not_a_finite_real(value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        checks.number(value, "x")


def test_number_ranges_name_the_bound_and_the_unit():
    assert checks.number(1, "share", low=0, low_open=True, high=1) == 1.0
    with pytest.raises(ValueError, match=re.escape("share: must be in (0, 1], got 1.5")):
        checks.number(1.5, "share", low=0, low_open=True, high=1)
    with pytest.raises(ValueError, match=re.escape("share: must be in (0, 1], got 0")):
        checks.number(0, "share", low=0, low_open=True, high=1)
    with pytest.raises(ValueError, match=re.escape("d: must be > 0 s, got -1")):
        checks.number(-1, "d", low=0, low_open=True, unit="s")
    with pytest.raises(ValueError, match=re.escape("p: must be a share, got 2")):
        checks.number(2, "p", high=1, what="a share")
    assert checks.number(None, "x", none=True) is None
    with pytest.raises(ValueError, match="or None"):
        checks.number("x", "x", none=True)


def test_a_plausibility_bound_says_it_is_probably_a_unit_mistake():
    with pytest.raises(ValueError, match=re.escape("mem: 1.6e+10 GB is implausibly large (at most 10000 GB "
                                                   "expected): a unit mistake? in GB")):
        checks.number(16e9, "mem", low=0, unit="GB", sane_high=1e4, sane_hint="in GB")
    assert checks.number(80, "mem", low=0, unit="GB", sane_high=1e4) == 80.0


@pytest.mark.parametrize("value, expected", [(3, 3), (np.int32(7), 7), (256.0, 256), ("256", 256), ("1e6", 10**6),
                                             ("1_000", 1000), (2**70, 2**70), ("123456789012345678901", 123456789012345678901)])
def test_integers_take_whole_numbers_only(value, expected):
    out = checks.integer(value, "n", low=0)
    assert out == expected and type(out) is int


@pytest.mark.parametrize("value, message", [
    (2.7, "n: must be an integer >= 1 (a whole number: it is never rounded), got 2.7"),
    ("2.7", "n: must be an integer >= 1 (a whole number: it is never rounded), got '2.7' (str)"),
    (True, "n: must be an integer >= 1, got True (bool)"),
    ("abc", "n: must be an integer >= 1, got 'abc' (str)"),
    (0, "n: must be an integer >= 1, got 0"),
    (float("inf"), "n: must be an integer >= 1 (a whole number: it is never rounded), got inf"),
])
def test_integers_refuse_fractions_bools_and_text(value, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        checks.integer(value, "n", low=1)


def test_integer_upper_bounds_say_why():
    with pytest.raises(ValueError, match=re.escape("k: must be at most 10 (tables per bin), got 11")):
        checks.integer(11, "k", low=1, high=10, high_why="tables per bin")


@pytest.mark.parametrize("value, expected", [(True, True), (False, False), (np.bool_(True), True), (1, True),
                                             (0, False), ("false", False), ("True", True), (" FALSE ", False)])
def test_booleans_accept_bools_zero_one_and_the_words_true_false(value, expected):
    assert checks.boolean(value, "flag") is expected


@pytest.mark.parametrize("value", ["no", "yes", "0", "1", "False!", "", 2, 0.0, None, [True]])
def test_booleans_refuse_anything_that_could_mean_either(value):
    with pytest.raises(checks.InvalidType, match=re.escape("flag: must be True or False, got")):
        checks.boolean(value, "flag")


def test_invalid_type_is_both_a_type_error_and_a_value_error():
    with pytest.raises(TypeError):
        checks.boolean("no", "flag")
    with pytest.raises(ValueError):
        checks.boolean("no", "flag")


def test_choices_list_what_is_allowed_and_the_closest():
    assert checks.choice("fifo", "policy", ["fifo", "sla"]) == "fifo"
    with pytest.raises(ValueError, match=re.escape("policy: unknown 'fiffo'; allowed: fifo, sla "
                                                   "(did you mean 'fifo'?)")):
        checks.choice("fiffo", "policy", ["fifo", "sla"])
    with pytest.raises(TypeError, match=re.escape("policy: unknown ['fifo'] (list); allowed")):
        checks.choice(["fifo"], "policy", ["fifo", "sla"])


def test_name_lists_never_split_one_name_into_letters():
    assert checks.names("azure_conv", "traces") == ("azure_conv",)
    assert checks.names("a, b", "traces") == ("a", "b")
    assert checks.names("['a', 'b']", "traces") == ("a", "b")
    assert checks.names(("a", "b"), "traces") == ("a", "b")
    with pytest.raises(ValueError, match="traces: names a twice"):
        checks.names("a,a", "traces")
    with pytest.raises(ValueError, match="non-empty list of names"):
        checks.names([], "traces")
    with pytest.raises(ValueError, match="non-empty list of names"):
        checks.names(["a", 3], "traces")
    with pytest.raises(ValueError, match=re.escape("traces: unknown 'c'; allowed: a, b")):
        checks.names("a,c", "traces", allowed=["a", "b"])


def test_integer_and_number_lists():
    assert checks.integers("1,2,4", "gpus", low=1) == (1, 2, 4)
    assert checks.integers(8, "gpus", low=1) == (8,)
    assert checks.integers("[1, 2]", "gpus") == (1, 2)
    with pytest.raises(ValueError, match=re.escape("gpus: must be an integer >= 1, got 'two' (str)")):
        checks.integers("1,two", "gpus", low=1)
    with pytest.raises(ValueError, match="non-empty list"):
        checks.integers([], "gpus")
    assert checks.numbers("[]", "weights", empty=True) == ()
    assert checks.numbers(["0.5", 1], "weights", low=0) == (0.5, 1.0)


def test_arrays_name_the_first_bad_value_in_the_given_order():
    out = checks.array([3, 1, 2], "a", low=0)
    assert out.dtype == np.float64 and out.tolist() == [3, 1, 2]
    assert checks.array(["1", "2.5"], "a").tolist() == [1.0, 2.5]
    with pytest.raises(ValueError, match=re.escape("a[2] = nan is not finite")):
        checks.array([5.0, 1.0, np.nan, -1.0], "a", low=0)   # position 2 comes before the negative at 3
    with pytest.raises(ValueError, match=re.escape("a[1] = -1 is negative")):
        checks.array([5.0, -1.0, np.inf], "a", low=0)
    with pytest.raises(ValueError, match=re.escape("a[0] = 2.5 is not a whole number of tokens")):
        checks.array([2.5], "a", integral=True, what="tokens")
    with pytest.raises(ValueError, match=re.escape("a[0] = 11 is more than 10 tokens")):
        checks.array([11], "a", high=10, high_why="tokens")
    with pytest.raises(TypeError, match="a: must be numbers, got booleans"):
        checks.array([True, False], "a")
    with pytest.raises(TypeError, match="a: must be real numbers, got complex numbers"):
        checks.array([1 + 1j], "a")
    with pytest.raises(TypeError, match=re.escape("a[1]: found 'x' (str), expected a number")):
        checks.array(["1", "x"], "a")
    with pytest.raises(ValueError, match=re.escape("a: must be 1-D, got shape (1, 2)")):
        checks.array([[1, 2]], "a")
    with pytest.raises(ValueError, match=re.escape("run.csv: line 4, column e2e_s = inf is not finite")):
        checks.array([1.0, 2.0, math.inf], "e2e_s", where=lambda i: f"run.csv: line {i + 2}, column e2e_s")


def test_integer_lists_are_ragged_exact_and_name_the_item_and_position():
    offsets, values = checks.integer_lists([[3, -1], [], (7,), np.array([2**62 + 1]), ["8", 9.0]], "h")
    assert offsets.dtype == values.dtype == np.int64
    assert offsets.tolist() == [0, 2, 2, 3, 4, 6] and values.tolist() == [3, -1, 7, 2**62 + 1, 8, 9]  # never float
    assert [v.tolist() for v in checks.integer_lists([], "h")] == [[0], []]
    for value, exception, message in [
            ([1, 2], TypeError, "h[0]: must be a list of integers, got 1; h is a list with one list of integers per "
                                "item, e.g. [[1, 2], [1, 7]]"),
            ("[[1]]", TypeError, "h: must be a list with one list of integers per item"),
            ({"a": [1]}, TypeError, "h: must be a list with one list of integers per item"),
            ([[1], [2, 0.5]], ValueError, "h[1][1]: must be an integer (a whole number: it is never rounded), got 0.5"),
            ([[math.inf]], ValueError, "h[0][0]: must be an integer (a whole number: it is never rounded), got inf"),
            ([[1, False]], TypeError, "h[0][1]: must be an integer, got False (bool)"),
            ([np.array([True])], TypeError, "h[0][0]: must be an integer, got True (bool)"),
            ([[[1]]], TypeError, "h[0][0]: must be a number, got a nested list [1] (list)"),
            ([[-2**63 - 1]], ValueError, "h[0][0] = -9,223,372,036,854,775,809 is outside the 64-bit range of "
                                         "integers; reduce the values, e.g. modulo 2**63")]:
        with pytest.raises(exception, match=re.escape(message)):
            checks.integer_lists(value, "h")
    with pytest.raises(ValueError, match=re.escape("h: must have one list per request, 3 in all, got 2; an empty "
                                                   "list stands for a request without hashes")):
        checks.integer_lists([[1], [2]], "h", length=3, per="request", what="hashes")
    with pytest.raises(ValueError, match=re.escape("t.jsonl: line 3, key 'ids'[0]: must be an integer")):
        checks.integer_lists([[1], ["x"]], "ids", where=lambda i: f"t.jsonl: line {i + 2}, key 'ids'")


def test_files_exist_are_not_folders_and_are_utf8(tmp_path):
    (tmp_path / "ok.txt").write_text("caf\u00e9\n", encoding="utf-8")
    assert checks.read_text(tmp_path / "ok.txt") == "caf\u00e9\n"
    (tmp_path / "latin1.txt").write_bytes("line one\nnaïve\n".encode("latin-1"))
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / 'latin1.txt'}: line 2: byte 0xef is not UTF-8 "
                                                   "text (a profile saved in another encoding")):
        checks.read_text(tmp_path / "latin1.txt", what="profile")
    assert checks.existing_file(tmp_path / "ok.txt", "path") == tmp_path / "ok.txt"
    with pytest.raises(IsADirectoryError, match="is a folder, not a file"):
        checks.existing_file(tmp_path, "path")
    with pytest.raises(FileNotFoundError, match="no such file"):
        checks.existing_file(tmp_path / "nope", "path")
    with pytest.raises(TypeError, match="path: must be a path to a file, got 3"):
        checks.existing_file(3, "path")


def test_a_folder_to_write_into_is_checked_without_creating_anything(tmp_path):
    target = tmp_path / "a" / "b"
    assert checks.writable_folder(target, "results_dir") == target
    assert not (tmp_path / "a").exists() and list(tmp_path.iterdir()) == []
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match=re.escape(f"results_dir {tmp_path / 'file'}: is a file, not a folder")):
        checks.writable_folder(tmp_path / "file", "results_dir")
    with pytest.raises(ValueError, match=re.escape(f"results_dir {tmp_path / 'file' / 'sub'}: cannot be created "
                                                   "(Not a directory)")):
        checks.writable_folder(tmp_path / "file" / "sub", "results_dir")
    with pytest.raises(TypeError, match="results_dir: must be a folder path"):
        checks.writable_folder(None, "results_dir")
