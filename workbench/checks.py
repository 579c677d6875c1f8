"""Shared validators: one per kind of value, used at every public boundary (API, CLI, notebook parameters).

Every validator takes the value and the *name* the user knows it by (an argument, a field, a CLI flag, a
notebook parameter), returns the value converted to its canonical type, and otherwise raises an error that
names it, says what was expected and what was found (and, with ``hint``, how to fix it)::

    gpu_mem_gb = checks.number(gpu_mem_gb, "gpu_mem_gb", low=0, low_open=True, high=1e5, unit="GB",
                               hint="the field is in GB (1e9 bytes), e.g. 80 for an A100-80GB")
    num_gpus = checks.integer(num_gpus, "num_gpus", low=1, high=100_000)
    chunked = checks.boolean(chunked, "chunked_prefill")
    router = checks.choice(router, "router", ROUTERS)
    arrival_s = checks.array(arrival_s, "arrival_s", low=0)

A new field of a frozen dataclass is validated in one line in ``__post_init__``::

    object.__setattr__(self, "kv_watermark", checks.number(self.kv_watermark, "kv_watermark", low=0, high=1))

Rules, the same everywhere:

* numbers: ``int``, ``float`` and numpy numbers; a string that is a clean number (``"0.9"``, ``" 1e-3 "``,
  ``"1_000"``) is converted (papermill and the command line pass text); ``bool``, complex numbers, NaN and
  infinities are refused;
* integers: as numbers, and the value must be whole (``256.0``, ``"1e6"`` are converted; ``2.7`` is refused,
  never truncated);
* booleans: ``True``/``False`` (numpy's too), the integers 0 and 1, and the text ``"true"``/``"false"``
  (any case, surrounding blanks ignored, as papermill's ``-p flag false`` passes it); anything else
  (``"no"``, ``"0"``, ``"False!"``, 2) is refused: it could not say which was meant;
* choices: a string from a fixed set; the error lists the allowed values (and the closest one);
* name lists: a list/tuple of strings, or one comma-separated string (``"a,b"``, as ``-p names a,b`` passes
  it), never the letters of a single string;
* arrays: numeric, 1-D, finite, in range, whole where counts are meant; the error gives the position of the
  first bad value in the order the caller gave (``where`` maps it to a file line);
* lists of integer lists (ragged, e.g. per request the hashes of its prompt's blocks): one flat list of whole
  numbers per item, read exactly as 64-bit integers (never through float), the count of items checked; the
  error names the item and the position in it (``where`` maps the item to a file line);
* labels (a column naming groups, e.g. which prompt a request sent): one kind for every value, all numbers or
  all text (a CSV column mixing ``7`` and ``p7`` would make ``7`` and ``7.0`` different groups); empty cells
  allowed (no group); the error names the two positions of different kinds;
* a value against a measurement (``scale``): within factors of it, else probably in another unit (a step
  time in milliseconds against times measured in seconds); the error gives both and the factor;
* files and folders: a path is text or ``os.PathLike`` and not blank (``""`` would quietly mean the current
  folder); a file must exist and not be a folder; a text file must be UTF-8 (the error names the file, line
  and byte); a CSV's rows have as many fields as its header (an extra field would shift every value into the
  next column); a folder to write into must not be a file and must be writable, checked without creating
  anything;
* keyword arguments: a misspelt one is named with the closest allowed, as the function the user called
  (``simulate: unknown keyword argument 'latncy' (did you mean 'latency'?)``), not by a deeper constructor.

Wrong types raise :class:`InvalidType`, both a ``TypeError`` and a ``ValueError`` (as numpy's ``AxisError`` is
both), so callers that catch either keep working; wrong values raise ``ValueError``.
"""

from __future__ import annotations

import difflib
import math
import numbers as _numbers
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

__all__ = ["InvalidType", "array", "boolean", "choice", "csv_fields", "existing_file", "instance", "integer",
           "integer_lists", "integers", "keywords", "labels", "names", "number", "numbers", "path", "read_text",
           "scale", "writable_folder"]


class InvalidType(TypeError, ValueError):
    """A value of the wrong type for its argument (a ``TypeError`` and a ``ValueError``)."""


def _shown(value) -> str:
    if isinstance(value, np.generic):
        value = value.item()
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{text} ({type(value).__name__})" if not isinstance(value, (int, float)) or isinstance(value, bool) \
        else text


def _fail(name: str, expected: str, value, hint: str = "", cls=ValueError):
    raise cls(f"{name}: must be {expected}, got {_shown(value)}" + (f"; {hint}" if hint else ""))


def _range_text(low, high, low_open: bool, high_open: bool, unit: str = "") -> str:
    unit = f" {unit}" if unit else ""
    fmt = lambda v: f"{v:,}" if isinstance(v, int) else f"{v:g}"  # noqa: E731
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{fmt(low)}, {fmt(high)}{')' if high_open else ']'}{unit}"
    if low is not None:
        return f"{'>' if low_open else '>='} {fmt(low)}{unit}"
    if high is not None:
        return f"{'<' if high_open else '<='} {fmt(high)}{unit}"
    return ""


def _from_text(value: str):
    """A clean number written as text (``"0.9"``, ``" 1e6 "``, ``"1_000"``), or None."""
    text = value.strip().replace("_", "")
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return None


def number(value, name: str, *, low=None, high=None, low_open: bool = False, high_open: bool = False,
           unit: str = "", hint: str = "", none: bool = False, what: str | None = None,
           sane_high: float | None = None, sane_hint: str = "") -> float | None:
    """A finite real number in the range, as ``float`` (``none=True``: None passes through).

    ``low_open``/``high_open`` exclude the bound itself; ``unit`` is shown after the range; ``what`` replaces
    the generic expectation text (e.g. ``"a share in (0, 1]"``).  ``sane_high`` is a plausibility bound, not
    a limit of the domain: above it the value is taken for a unit mistake (bytes for GB, ms for s) and
    refused with ``sane_hint`` (how to write it in the right unit).
    """
    if value is None and none:
        return None
    range_text = _range_text(low, high, low_open, high_open, unit)
    expected = what or ("a finite number" + (f" {range_text}" if range_text else ""))
    original = value
    if isinstance(value, str):
        value = _from_text(value)
    if value is None or isinstance(value, (bool, np.bool_)) or not isinstance(value, _numbers.Real):
        _fail(name, expected + (", or None" if none else ""), original, hint, InvalidType)
    value = float(value)
    if not math.isfinite(value):
        _fail(name, expected, original, hint)
    if ((low is not None and (value < low or (low_open and value == low)))
            or (high is not None and (value > high or (high_open and value == high)))):
        _fail(name, what or range_text, original, hint)
    if sane_high is not None and value > sane_high:
        unit_text = f" {unit}" if unit else ""
        raise ValueError(f"{name}: {value:g}{unit_text} is implausibly large (at most {sane_high:g}{unit_text} "
                         "expected): a unit mistake?" + (f" {sane_hint}" if sane_hint else ""))
    return value


def integer(value, name: str, *, low=None, high=None, hint: str = "", none: bool = False,
            high_why: str = "") -> int | None:
    """A whole number in ``[low, high]``, as ``int``; ``high_why`` says why the upper bound exists."""
    if value is None and none:
        return None
    expected = "an integer" + (f" {_range_text(low, None, False, False)}" if low is not None else "")
    expected += ", or None" if none else ""
    original = value
    if isinstance(value, str):
        value = _from_text(value)
    if value is None or isinstance(value, (bool, np.bool_)) or not isinstance(value, _numbers.Real):
        _fail(name, expected, original, hint, InvalidType)
    if not isinstance(value, _numbers.Integral):
        value = float(value)
        if not (math.isfinite(value) and value.is_integer()):
            _fail(name, expected + " (a whole number: it is never rounded)", original, hint)
    value = int(value)
    if low is not None and value < low:
        _fail(name, expected, original, hint)
    if high is not None and value > high:
        raise ValueError(f"{name}: must be at most {high:,}" + (f" ({high_why})" if high_why else "")
                         + f", got {value:,}" + (f"; {hint}" if hint else ""))
    return value


_TRUE, _FALSE = "true", "false"


def boolean(value, name: str, *, none: bool = False) -> bool | None:
    """``True``/``False`` (numpy's too), 0/1, or the text "true"/"false" in any case; see the module docstring."""
    if value is None and none:
        return None
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, _numbers.Integral) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in (_TRUE, _FALSE):
        return value.strip().lower() == _TRUE
    _fail(name, "True or False" + (", or None" if none else ""), value,
          "the text 'true'/'false' is accepted too (papermill -p flag false)", InvalidType)


def choice(value, name: str, allowed: Iterable[str], *, hint: str = "", none: bool = False) -> str | None:
    """One of ``allowed`` (exactly); the error lists them and the closest match."""
    if value is None and none:
        return None
    allowed = list(allowed)
    if isinstance(value, str) and value in allowed:
        return value
    close = difflib.get_close_matches(value, allowed, n=1) if isinstance(value, str) else []
    cls = ValueError if isinstance(value, str) else InvalidType
    shown = repr(value) if isinstance(value, str) else _shown(value)
    raise cls(f"{name}: unknown {shown}; allowed: {', '.join(map(str, allowed))}"
              + (f" (did you mean {close[0]!r}?)" if close else "") + (f"; {hint}" if hint else ""))


def keywords(given, name: str, allowed: Iterable[str]) -> None:
    """Keyword arguments ``given`` (names) all in ``allowed``: a misspelt one is a ``TypeError`` naming the
    function ``name`` it was passed to and the closest allowed keyword (not an error from deeper down)."""
    allowed = list(allowed)
    for key in given:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            raise InvalidType(f"{name}: unknown keyword argument {key!r}"
                              + (f" (did you mean {close[0]!r}?)" if close else f"; allowed: {', '.join(allowed)}"))


def names(value, name: str, *, allowed: Iterable[str] | None = None, none: bool = False,
          unique: bool = True) -> tuple[str, ...] | None:
    """A non-empty tuple of names from a list/tuple of strings or one comma-separated string."""
    if value is None and none:
        return None
    if isinstance(value, str):
        items = [v.strip().strip("'\"") for v in value.strip().strip("[]()").split(",")]
        items = [v for v in items if v]
    elif isinstance(value, Iterable) and not isinstance(value, (bytes, dict)):
        items = list(value)
    else:
        raise InvalidType(f"{name}: must be a list of names or a comma-separated string, got {_shown(value)}")
    bad = [v for v in items if not isinstance(v, str) or not v.strip()]
    if bad or not items:
        raise InvalidType(f"{name}: must be a non-empty list of names (strings) or a comma-separated string, "
                          f"got {_shown(value)}")
    items = [v.strip() for v in items]
    if allowed is not None:
        allowed = list(allowed)
        for item in items:
            choice(item, name, allowed)
    if unique and len(set(items)) != len(items):
        twice = sorted({v for v in items if items.count(v) > 1})
        raise ValueError(f"{name}: names {', '.join(twice)} twice, got {_shown(value)}")
    return tuple(items)


def _items(value, name: str, empty: bool) -> list:
    """The items of a list/tuple, of one comma-separated string ("1,2,4" or "[1, 2, 4]"), or one value."""
    if isinstance(value, str):
        items = [v for v in value.strip().strip("[]()").split(",") if v.strip()]
    elif isinstance(value, Iterable) and not isinstance(value, (bytes, dict)):
        items = list(value)
    else:
        items = [value]
    if not items and not empty:
        raise ValueError(f"{name}: must be a non-empty list, got {_shown(value)}")
    return items


def integers(value, name: str, *, low=None, high=None, unique: bool = True,
             empty: bool = False) -> tuple[int, ...]:
    """A tuple of integers (each as :func:`integer`) from a list/tuple, one integer, or a comma-separated
    string ("1,2,4", as papermill's ``-p counts 1,2,4`` passes it); ``empty`` allows none."""
    out = tuple(integer(v, name, low=low, high=high) for v in _items(value, name, empty))
    if unique and len(set(out)) != len(out):
        raise ValueError(f"{name}: lists a value more than once, got {_shown(value)}")
    return out


def numbers(value, name: str, *, low=None, high=None, empty: bool = False) -> tuple[float, ...]:
    """A tuple of finite numbers (each as :func:`number`), read like :func:`integers`."""
    return tuple(number(v, name, low=low, high=high) for v in _items(value, name, empty))


def instance(value, name: str, types, *, expected: str, hint: str = ""):
    """``value`` if it is an instance of ``types``, else :class:`InvalidType` saying what was ``expected``."""
    if not isinstance(value, types):
        _fail(name, expected, value, hint, InvalidType)
    return value


def _label_kind(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "boolean"
    if isinstance(value, (_numbers.Real, np.number)):
        return "number"
    if isinstance(value, str):
        return "number written as text" if _from_text(value) is not None else "text"
    return type(value).__name__


def labels(values, name: str, *, where: Callable[[int], str] | None = None) -> np.ndarray:
    """Integer codes (0, 1, ... in order of first appearance; -1 for an empty cell: None or NaN) of a sequence of
    group labels, all numbers (``7`` and ``7.0`` are one label) or all text (surrounding blanks ignored).

    Refused: labels of different kinds (numbers and text, booleans, lists), non-finite numbers; the error names
    ``where(i)`` (a file line or a row) of the first value of each kind."""
    items = list(values)
    place = where if where is not None else (lambda i: f"{name}[{i}]")
    present = [i for i, v in enumerate(items) if not (v is None or (isinstance(v, float) and math.isnan(v)))]
    codes = np.full(len(items), -1, np.int64)
    if not present:
        return codes
    kinds = {}
    for i in present:
        kinds.setdefault(_label_kind(items[i]), i)
    first_kind, first_at = next(iter(kinds.items()))
    if len(kinds) > 1:
        other_kind, other_at = list(kinds.items())[1]
        raise InvalidType(f"{name}: a column of mixed types: {_shown(items[first_at])} ({first_kind}) at "
                          f"{place(first_at)}, {_shown(items[other_at])} ({other_kind}) at {place(other_at)}; use one "
                          f"kind of label for every row (all numbers or all text), so that equal {name}s mean one "
                          "group")
    if first_kind not in ("number", "text", "number written as text"):
        raise InvalidType(f"{place(first_at)}: {name} is a {first_kind} ({_shown(items[first_at])}); expected a "
                          "number or a text label")
    if first_kind == "text":
        keys = [items[i].strip() for i in present]
    else:
        keys = [float(_from_text(items[i]) if isinstance(items[i], str) else items[i]) for i in present]
        bad = next((i for i, k in zip(present, keys) if not math.isfinite(k)), None)
        if bad is not None:
            raise ValueError(f"{place(bad)}: {name} = {_shown(items[bad])}, expected a finite number or a text label")
    seen: dict = {}
    for i, key in zip(present, keys):
        codes[i] = seen.setdefault(key, len(seen))
    return codes


def scale(value: float, name: str, reference: float, *, what: str, reference_what: str, above: float = 20.0,
          below: float = 1000.0, hint: str = "") -> float:
    """``value`` (seconds) if it is at most ``above`` times the measured ``reference`` and at least ``reference /
    below``, else an error giving both: a value that far off is probably in another unit.  (The two factors
    differ where a measurement bounds the value on one side only: a decode step of one request cannot take
    longer than the fastest measured TPOT, and may be far shorter than a loaded server's.)"""
    if value > 0 and reference > 0 and not reference / below <= value <= above * reference:
        factor = above if value > reference else below
        raise ValueError(f"{name}: {what} is {value:.4g} s, {value / reference:.3g} times {reference_what} "
                         f"({reference:.4g} s); more than {factor:g}x {'above' if value > reference else 'below'} "
                         f"what was measured is another unit, not another server" + (f"; {hint}" if hint else ""))
    return value


def array(values, name: str, *, integral: bool = False, low=None, high=None, high_why: str = "",
          finite: bool = True, length: int | None = None, where: Callable[[int], str] | None = None,
          what: str = "") -> np.ndarray:
    """A 1-D float64 array of numbers, checked in the order given.

    Refused: booleans, complex numbers, text that is not a number, more than one dimension, NaN/inf
    (``finite``), values outside ``[low, high]``, fractions (``integral``).  The error names the first bad
    position: ``name[i]``, or ``where(i)`` (e.g. ``"trace.csv: line 7, column 'e2e_s'"``); ``what`` says what
    the numbers count (``"tokens"``, ``"seconds"``).
    """
    kind = f" ({what})" if what else ""
    raw = np.asarray(values) if not isinstance(values, np.ndarray) else values
    place = (lambda i: where(i)) if where is not None else (lambda i: f"{name}[{i}]")
    if raw.dtype.kind == "b":
        if where is not None and raw.size:   # a file's column read as booleans: name its first cell
            raise InvalidType(f"{where(0)}: found {_shown(raw.ravel()[0])}, expected a number{kind}")
        raise InvalidType(f"{name}: must be numbers{kind}, got booleans (True/False)")
    if raw.dtype.kind == "c":
        raise InvalidType(f"{name}: must be real numbers{kind}, got complex numbers")
    if raw.dtype.kind in "mM":
        raise InvalidType(f"{name}: must be plain numbers{kind}, got {raw.dtype} values")
    if raw.dtype.kind not in "iuf":
        flat = raw.ravel()
        converted = np.empty(flat.size, dtype=np.float64)
        for i, v in enumerate(flat):
            number_v = _from_text(v) if isinstance(v, str) else v
            if number_v is None or isinstance(number_v, (bool, np.bool_, complex, np.complexfloating)) \
                    or not isinstance(number_v, _numbers.Real):
                raise InvalidType(f"{place(i)}: found {_shown(v)}, expected a number{kind}")
            converted[i] = float(number_v)
        raw = converted.reshape(raw.shape)
    if raw.ndim != 1:
        raise ValueError(f"{name}: must be 1-D, got shape {raw.shape}")
    if length is not None and raw.size != length:
        raise ValueError(f"{name}: must have {length:,} values, got {raw.size:,}")
    array_ = raw.astype(np.float64, copy=raw.dtype != np.float64)
    checks: list[tuple[np.ndarray, str]] = []
    if finite:
        checks.append((~np.isfinite(array_), "is not finite"))
    if low is not None:
        checks.append((array_ < low, f"is below {low:g}" if low != 0 else "is negative"))
    if integral:
        with np.errstate(invalid="ignore"):
            checks.append((np.isfinite(array_) & (array_ != np.floor(array_)),
                           "is not a whole number" + (f" of {what}" if what else "")))
    if high is not None:
        checks.append((array_ > high, f"is more than {high:,}" + (f" {high_why}" if high_why else "")))
    first, problem = None, ""
    for bad, text in checks:
        if bad.any():
            i = int(np.argmax(bad))
            if first is None or i < first:
                first, problem = i, text
    if first is not None:
        raise ValueError(f"{place(first)} = {array_[first]:g} {problem}")
    return array_


_INT64 = np.iinfo(np.int64)


def integer_lists(values, name: str, *, length: int | None = None, per: str = "item", what: str = "integers",
                  example: str = "[[1, 2], [1, 7]]", where: Callable[[int], str] | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """One list of whole numbers per item (ragged), as ``(offsets, values)``: int64 arrays, item ``i`` is
    ``values[offsets[i]:offsets[i + 1]]``.

    Read exactly as 64-bit integers (a list of Python ints or an integer array never goes through float); an
    empty list is an item with none.  Refused: anything but a list of lists (a flat list of numbers, text, a
    dict), ``length`` items expected and another count found, and in an item booleans, fractions, NaN/inf,
    text that is not a number, nested lists, values outside the 64-bit range.  The error names the item,
    ``name[i]`` or ``where(i)``, and the position in it; ``per`` says what an item stands for ("request"),
    ``what`` what the numbers are ("block hashes"), ``example`` shows the expected shape.
    """
    shape = f"a list with one list of {what} per {per}, e.g. {example}"
    if isinstance(values, (str, bytes, dict)) or not isinstance(values, Iterable) \
            or (isinstance(values, np.ndarray) and values.ndim == 0):
        raise InvalidType(f"{name}: must be {shape}, got {_shown(values)}")
    items = list(values)
    if length is not None and len(items) != length:
        raise ValueError(f"{name}: must have one list per {per}, {length:,} in all, got {len(items):,}; an empty "
                         f"list stands for a {per} without {what}")
    place = (lambda i: where(i)) if where is not None else (lambda i: f"{name}[{i}]")
    counts = np.zeros(len(items), np.int64)
    parts = []
    for i, item in enumerate(items):
        if isinstance(item, (str, bytes, dict)) or not isinstance(item, (Iterable, np.ndarray)) \
                or (isinstance(item, np.ndarray) and item.ndim != 1):
            raise InvalidType(f"{place(i)}: must be a list of {what}, got {_shown(item)}; {name} is {shape}")
        array = _exact_integers(item, place(i), what)
        counts[i] = array.size
        parts.append(array)
    offsets = np.zeros(len(items) + 1, np.int64)
    np.cumsum(counts, out=offsets[1:])
    flat = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    return offsets, flat.astype(np.int64, copy=False)


def _exact_integers(item, place: str, what: str) -> np.ndarray:
    """One item of :func:`integer_lists` as int64: integer arrays and lists of ints directly, anything else
    value by value through :func:`integer`."""
    plain = isinstance(item, (list, tuple)) and all(type(v) is int for v in item)
    if isinstance(item, np.ndarray) and item.dtype.kind in "iu":
        array = item
    elif plain:
        try:
            array = np.asarray(item, dtype=np.int64) if item else np.zeros(0, np.int64)
        except OverflowError:
            array = None   # a value beyond 64 bits: found and named below
    else:
        array = None
    if array is not None:
        if array.dtype.kind == "u" and array.size and array.max() > _INT64.max:
            j = int(np.argmax(array > _INT64.max))
            raise ValueError(f"{place}[{j}] = {int(array[j]):,} is outside the 64-bit range of {what}; reduce the "
                             "values, e.g. modulo 2**63")
        return array.astype(np.int64, copy=False)
    out = np.empty(len(item), np.int64)
    for j, v in enumerate(item):
        if isinstance(v, (list, tuple, np.ndarray)):
            raise InvalidType(f"{place}[{j}]: must be a number, got a nested list {_shown(v)}")
        value = integer(v, f"{place}[{j}]")
        if not _INT64.min <= value <= _INT64.max:
            raise ValueError(f"{place}[{j}] = {value:,} is outside the 64-bit range of {what}; reduce the values, "
                             "e.g. modulo 2**63")
        out[j] = value
    return out


def path(value, name: str, *, expected: str = "a path", none: bool = False):
    """``value`` if it is a path (text or ``os.PathLike``) that is not blank (``""`` would mean the current
    folder); ``none=True``: None passes through."""
    if value is None and none:
        return None
    if not isinstance(value, (str, os.PathLike)) or not str(os.fspath(value)).strip():
        _fail(name, expected + (", or None" if none else ""), value, cls=InvalidType)
    return value


def existing_file(value, name: str, *, what: str = "file") -> Path:
    """``value`` as a Path that exists and is a file (``FileNotFoundError`` / ``IsADirectoryError`` else)."""
    file = Path(path(value, name, expected=f"a path to a {what}")).expanduser()
    if file.is_dir():
        raise IsADirectoryError(f"{name}: {file} is a folder, not a {what}")
    if not file.is_file():
        raise FileNotFoundError(f"{name}: {file}: no such {what}")
    return file


def existing_dir(value, name: str, *, what: str = "folder") -> Path:
    """``value`` as a Path that exists and is a folder (``FileNotFoundError`` / ``NotADirectoryError`` else)."""
    folder = Path(path(value, name, expected=f"a path to a {what}")).expanduser()
    if folder.is_file():
        raise NotADirectoryError(f"{name}: {folder} is a file, not a {what}")
    if not folder.is_dir():
        raise FileNotFoundError(f"{name}: {folder}: no such {what}")
    return folder


def read_text(path, *, what: str = "file") -> str:
    """The UTF-8 text of a file (a leading BOM dropped); an encoding error names the file, line and byte."""
    file = Path(path)
    raw = file.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ValueError(f"{file}: line {line}: byte 0x{raw[exc.start]:02x} is not UTF-8 text (a {what} saved in "
                         "another encoding, e.g. Latin-1 or UTF-16); re-save it as UTF-8") from None


def csv_fields(text: str, file) -> None:
    """Every row of a CSV text has as many fields as its header line (blank lines aside), else a ``ValueError``
    naming the file and line: a row with one field more makes pandas take its first field for an index and
    shift every value into the next column, one with fewer leaves the last columns empty."""
    import csv
    import io

    reader = csv.reader(io.StringIO(text))
    header = None
    for record in reader:
        if not any(field.strip() for field in record):
            continue
        if header is None:
            header = record
        elif len(record) != len(header):
            raise ValueError(
                f"{file}: line {reader.line_num} has {len(record)} fields but the header has {len(header)} "
                f"({','.join(header)})" + ("; a trailing comma, or a number written with a thousands separator "
                                           "(1,234), adds a field" if len(record) > len(header) else ""))


def writable_folder(value, name: str) -> Path:
    """``value`` (absolute) if it is, or can be made, a folder this process may write into; creates nothing.

    Refused: a path that is a file, or lies under a file; a folder (or, for a folder still to be made, its
    nearest existing parent) in which a file cannot be created.
    """
    folder = Path(path(value, name, expected="a folder path")).expanduser().absolute()
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{name} {folder}: is a file, not a folder; choose a folder (it is created if needed)")
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{name} {folder}: cannot be created (Not a directory): {existing} is a file, not a "
                         "folder; choose another path")
    try:  # os.access says yes to root on any folder; creating a file is the real test
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        where = "" if existing == folder else f" (in {existing}, where it would be created)"
        raise ValueError(f"{name} {folder}: cannot be written{where} ({exc.strerror or exc}); "
                         "choose a folder you can write to") from None
    return folder
