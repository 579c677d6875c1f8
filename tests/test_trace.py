import os
import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workbench.traces import trace as trace_module
from workbench.traces.trace import Trace, TraceFormatError, TraceSizeWarning, clear_memory_cache, load_trace

HEADER_12 = "Timestamp,Model,Request tokens,Response tokens,Total tokens,Log Type"
HEADER_3 = "Timestamp,Session ID,Elapsed time,Model,Request tokens,Response tokens,Total tokens,Log Type"
HEADER_MINIMAL = "arrival_s,prompt_tokens,output_tokens"
# the 3 first rows of BurstGPT_1.csv, then a failure, an out-of-order row and ties at t = 45
ROWS_12 = """5,ChatGPT,472,18,490,Conversation log
45,ChatGPT,1087,230,1317,Conversation log
118,GPT-4,417,276,693,Conversation log
45,GPT-4,100,0,100,API log
30,ChatGPT,200,20,220,API log
45,ChatGPT,300,30,330,API log
"""


@pytest.fixture(autouse=True)
def cache_dir(monkeypatch, tmp_path):
    path = tmp_path / "cache"
    monkeypatch.setenv("WORKBENCH_CACHE_DIR", str(path))
    clear_memory_cache()
    yield path
    clear_memory_cache()


def write(tmp_path, text, name="trace.csv"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def burstgpt_csv(tmp_path):
    return write(tmp_path, f"{HEADER_12}\n{ROWS_12}", "BurstGPT_1.csv")


# ---------------------------------------------------------------- accepted files

def test_burstgpt_file_1_sorts_stably_shifts_and_drops_failures(burstgpt_csv):
    trace = load_trace(burstgpt_csv, use_real_timestamps=True)
    np.testing.assert_array_equal(trace.arrival_s, [0, 25, 40, 40, 113])  # ties at 45 keep file order
    np.testing.assert_array_equal(trace.prompt_tokens, [472, 200, 1087, 300, 417])
    np.testing.assert_array_equal(trace.output_tokens, [18, 20, 230, 30, 276])
    assert trace.meta.rows_read == 6
    assert trace.meta.rows_dropped == {"failed (0 response tokens)": 1}
    assert trace.meta.source == "BurstGPT_1.csv" and not trace.is_synthetic
    assert trace.label == "BurstGPT_1.csv (5 req)"
    assert trace.arrival_s.dtype == np.float64 and trace.prompt_tokens.dtype == np.int32


def test_keeping_failures(burstgpt_csv):
    trace = load_trace(burstgpt_csv, use_real_timestamps=True, drop_failed=False)
    np.testing.assert_array_equal(trace.prompt_tokens, [472, 200, 1087, 100, 300, 417])
    np.testing.assert_array_equal(trace.output_tokens, [18, 20, 230, 0, 30, 276])
    assert trace.meta.rows_dropped == {}


def test_burstgpt_file_3(tmp_path):
    path = write(tmp_path, f"{HEADER_3}\n"
                           "10.5,abc,1.2,GPT-4,400,40,440,API log\n"
                           "3.25,def,0.5,ChatGPT,300,30,330,Conversation log\n")
    trace = load_trace(path, use_real_timestamps=True)
    np.testing.assert_array_equal(trace.arrival_s, [0.0, 7.25])
    np.testing.assert_array_equal(trace.prompt_tokens, [300, 400])
    assert len(load_trace(path, models="GPT-4")) == 1


def test_minimal_schema_counts_zero_output_as_failed(tmp_path):
    path = write(tmp_path, f"{HEADER_MINIMAL}\n2.5,10,3\n1.0,20,0\n1.0,30,4\n")
    trace = load_trace(path, rps_scaling=1.0)
    np.testing.assert_array_equal(trace.arrival_s, [0.0, 1.5])
    np.testing.assert_array_equal(trace.prompt_tokens, [30, 10])
    assert trace.meta.rows_dropped == {"failed (0 response tokens)": 1}


@pytest.mark.parametrize("header", [f" {HEADER_12.replace(',', ' , ')} ", "\ufeff" + HEADER_12])
def test_header_whitespace_and_bom_are_ignored(tmp_path, header):
    assert len(load_trace(write(tmp_path, f"{header}\n{ROWS_12}"))) == 5


@pytest.mark.parametrize("header", [
    HEADER_12 + ",Extra",
    HEADER_12.lower(),
    "Model,Timestamp,Request tokens,Response tokens,Total tokens,Log Type",
    "Timestamp,Model,Request tokens,Response tokens,Log Type",
    "arrival_s,prompt_tokens",
    "arrival_s;prompt_tokens;output_tokens",
])
def test_header_detection_is_exact(tmp_path, header):
    path = write(tmp_path, f"{header}\n1,2,3\n")
    with pytest.raises(TraceFormatError, match="unrecognised header") as excinfo:
        load_trace(path)
    message = str(excinfo.value)
    assert str(path) in message
    assert f"found columns {[c.strip() for c in header.split(',')]}" in message
    for accepted in (HEADER_12, HEADER_3, HEADER_MINIMAL):
        assert accepted in message


def test_trailing_blank_lines_are_tolerated(tmp_path):
    assert len(load_trace(write(tmp_path, f"{HEADER_MINIMAL}\n1,2,3\n2,3,4\n\n\n"))) == 2


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("body, pattern", [
    ("", "empty file, expected a header line"),
    ("\n", "empty file"),
    (f"{HEADER_12}\n", "header but no data rows"),
    (f"{HEADER_12}\n5,ChatGPT,472,18,490,API log\n6,ChatGPT,abc,18,490,API log\n",
     "line 3, column 'Request tokens': found 'abc', expected a number"),
    (f"{HEADER_12}\n5,ChatGPT,472,18,490,API log\n6x,ChatGPT,1,18,19,API log\n",
     "line 3, column 'Timestamp': found '6x', expected a number"),
    (f"{HEADER_12}\n5,ChatGPT,472,-18,454,API log\n",
     "line 2, column 'Response tokens': found -18, expected a value >= 0"),
    (f"{HEADER_12}\n5,ChatGPT,472,18,490,API log\n,ChatGPT,1,2,3,API log\n",
     "line 3, column 'Timestamp': empty or NaN value"),
    (f"{HEADER_MINIMAL}\n1,2,3\n2,NaN,3\n", "line 3, column 'prompt_tokens': empty or NaN value"),
    (f"{HEADER_MINIMAL}\n1,2,3\n\n2,2,3\n", "line 3, column 'arrival_s': empty or NaN value"),
    (f"{HEADER_MINIMAL}\n1,2,3\n2,2\n", "line 3, column 'output_tokens': empty or NaN value"),
    (f"{HEADER_MINIMAL}\n1,2.5,3\n", "line 2, column 'prompt_tokens': found 2.5, expected a whole number of tokens"),
    (f"{HEADER_MINIMAL}\ninf,2,3\n", "line 2, column 'arrival_s': found inf, expected a finite number"),
    (f"{HEADER_12}\n5,,472,18,490,API log\n", "line 2, column 'Model': empty or NaN value, expected a label"),
    (f"{HEADER_MINIMAL}\n1,2,3\n2,3,4,5\n", "malformed CSV"),
])
def test_bad_files_name_file_line_and_column(tmp_path, body, pattern):
    path = write(tmp_path, body)
    with pytest.raises(TraceFormatError, match=re.escape(pattern)) as excinfo:
        load_trace(path)
    assert str(path) in str(excinfo.value)


def test_missing_file_explains_where_to_put_burstgpt(tmp_path):
    path = tmp_path / "BurstGPT_1.csv"
    with pytest.raises(FileNotFoundError, match="place them by hand") as excinfo:
        load_trace(path)
    assert str(path) in str(excinfo.value) and "cannot be downloaded" in str(excinfo.value)


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(models="chatgpt"), "unknown Model value(s) ['chatgpt']; allowed values: 'ChatGPT', 'GPT-4'"),
    (dict(log_types=["API log", "api"]), "allowed values: 'Conversation log', 'API log'"),
    (dict(models=[]), "models: must be a non-empty list of names"),
    (dict(num_requests=0), "num_requests: must be an integer >= 1"),
    (dict(num_requests=2.5), "num_requests: must be an integer >= 1"),
    (dict(rps_scaling=0), "rps_scaling: must be > 0"),
    (dict(rps_scaling=float("nan")), "rps_scaling: must be a finite number > 0"),
])
def test_bad_options(burstgpt_csv, kwargs, pattern):
    with pytest.raises(ValueError, match=re.escape(pattern)):
        load_trace(burstgpt_csv, **kwargs)


@pytest.mark.parametrize("kwargs", [dict(models="ChatGPT"), dict(log_types="API log")])
def test_label_filters_need_label_columns(tmp_path, kwargs):
    path = write(tmp_path, f"{HEADER_MINIMAL}\n1,2,3\n")
    with pytest.raises(ValueError, match="has no .* column .*minimal schema"):
        load_trace(path, **kwargs)


def test_filter_leaving_nothing_is_an_error(tmp_path):
    path = write(tmp_path, f"{HEADER_12}\n5,ChatGPT,472,18,490,API log\n")
    with pytest.raises(ValueError, match="no requests left"):
        load_trace(path, models="GPT-4")


# ---------------------------------------------------------------- options

def test_num_requests_takes_first_after_filter_and_sort(burstgpt_csv):
    trace = load_trace(burstgpt_csv, num_requests=3, use_real_timestamps=True)
    np.testing.assert_array_equal(trace.prompt_tokens, [472, 200, 1087])
    assert trace.meta.rows_dropped == {"failed (0 response tokens)": 1, "num_requests cut": 2}
    assert trace.meta.options["num_requests"] == 3


def test_num_requests_beyond_file_warns_and_returns_all(burstgpt_csv):
    with pytest.warns(TraceSizeWarning, match="num_requests=10 but only 5 requests remain"):
        trace = load_trace(burstgpt_csv, num_requests=10)
    assert len(trace) == 5


def test_rps_scaling_and_real_timestamps(burstgpt_csv):
    real = load_trace(burstgpt_csv, use_real_timestamps=True, rps_scaling=7.0)
    scaled = load_trace(burstgpt_csv, rps_scaling=5.0)
    default = load_trace(burstgpt_csv)
    np.testing.assert_allclose(scaled.arrival_s, real.arrival_s / 5.0)
    # the default load is the suite's (issue 20): timestamps / 10; the seed study's / 200 is one argument away
    np.testing.assert_allclose(default.arrival_s, real.arrival_s / 10.0)
    assert default.mean_rate_rps == pytest.approx(10 * real.mean_rate_rps)
    np.testing.assert_allclose(load_trace(burstgpt_csv, rps_scaling=200).arrival_s, real.arrival_s / 200.0)


def test_model_and_log_type_filters(burstgpt_csv):
    gpt4 = load_trace(burstgpt_csv, models=("GPT-4",), drop_failed=False, use_real_timestamps=True)
    np.testing.assert_array_equal(gpt4.prompt_tokens, [100, 417])
    np.testing.assert_array_equal(gpt4.arrival_s, [0, 73])  # shifted to its own first request
    api_chatgpt = load_trace(burstgpt_csv, models="ChatGPT", log_types="API log")
    np.testing.assert_array_equal(api_chatgpt.prompt_tokens, [200, 300])
    assert api_chatgpt.meta.rows_dropped == {"failed (0 response tokens)": 1, "model filter": 1,
                                             "log type filter": 2}
    both = load_trace(burstgpt_csv, models=["ChatGPT", "GPT-4"])
    assert len(both) == 5


# ---------------------------------------------------------------- caching

def test_identical_call_returns_the_cached_object(burstgpt_csv):
    first = load_trace(burstgpt_csv, num_requests=4)
    assert load_trace(str(burstgpt_csv), num_requests=4) is first
    assert load_trace(burstgpt_csv, num_requests=3) is not first


def test_disk_cache_is_used_after_clearing_memory(burstgpt_csv, cache_dir, monkeypatch):
    first = load_trace(burstgpt_csv)
    assert len(list(cache_dir.glob("parsed-*.npz"))) == 1
    assert not list(cache_dir.glob("*.tmp"))
    clear_memory_cache()

    def no_parse(path):
        raise AssertionError("the CSV was parsed again")

    monkeypatch.setattr(trace_module, "_parse_csv", no_parse)
    again = load_trace(burstgpt_csv)
    assert again is not first and again.fingerprint == first.fingerprint
    np.testing.assert_array_equal(again.arrival_s, first.arrival_s)


def test_modified_file_of_same_size_and_mtime_is_reparsed(burstgpt_csv):
    stat = burstgpt_csv.stat()
    before = load_trace(burstgpt_csv, use_real_timestamps=True)
    burstgpt_csv.write_text(f"{HEADER_12}\n{ROWS_12.replace('472', '999')}")
    os.utime(burstgpt_csv, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert burstgpt_csv.stat().st_size == stat.st_size
    after = load_trace(burstgpt_csv, use_real_timestamps=True)
    assert after.prompt_tokens[0] == 999 and before.prompt_tokens[0] == 472
    assert after.fingerprint != before.fingerprint
    clear_memory_cache()  # the disk cache is keyed by content too
    assert load_trace(burstgpt_csv, use_real_timestamps=True).prompt_tokens[0] == 999


def test_unreadable_disk_cache_is_ignored(burstgpt_csv, cache_dir):
    first = load_trace(burstgpt_csv)
    (cached,) = cache_dir.glob("parsed-*.npz")
    cached.write_bytes(b"not a zip file")
    clear_memory_cache()
    assert load_trace(burstgpt_csv).fingerprint == first.fingerprint


# ---------------------------------------------------------------- Trace

def test_from_arrays_sorts_shifts_and_freezes():
    trace = Trace.from_arrays([5.0, 3.0, 3.0], [1, 2, 3], [4, 5, 6], source="unit")
    np.testing.assert_array_equal(trace.arrival_s, [0.0, 0.0, 2.0])
    np.testing.assert_array_equal(trace.prompt_tokens, [2, 3, 1])
    assert trace.meta.rows_read == 3 and not trace.is_synthetic
    with pytest.raises(ValueError, match="read-only"):
        trace.arrival_s[0] = 1.0
    frame = trace.to_frame()
    assert list(frame.columns) == ["arrival_s", "prompt_tokens", "output_tokens"] and len(frame) == 3


@pytest.mark.parametrize("arrays, pattern", [
    (([0, 1], [1, 2], [1]), "equal lengths"),
    (([0, np.nan], [1, 2], [1, 2]), "arrival_s[1] = nan is not finite"),
    (([0, 1], [1, -2], [1, 2]), "prompt_tokens[1] = -2 is negative"),
    (([0, 1], [1, 2], [1, 2.5]), "output_tokens[1] = 2.5 is not a whole number of tokens"),
    (([[0, 1]], [1, 2], [1, 2]), "arrival_s: must be 1-D"),
    ((["a", "b"], [1, 2], [1, 2]), "arrival_s[0]: found 'a' (str), expected a number"),
])
def test_from_arrays_validation(arrays, pattern):
    with pytest.raises(ValueError, match=re.escape(pattern)):
        Trace.from_arrays(*arrays)


def test_fingerprint_changes_with_any_value():
    base = Trace.from_arrays([0, 1, 2], [1, 2, 3], [4, 5, 6])
    variants = [Trace.from_arrays([0, 1, 3], [1, 2, 3], [4, 5, 6]), Trace.from_arrays([0, 1, 2], [1, 2, 4], [4, 5, 6]),
                Trace.from_arrays([0, 1, 2], [1, 2, 3], [4, 5, 7]),
                Trace.from_arrays([0, 1, 2], [1, 2, 3], [4, 5, 6], source="other")]
    assert Trace.from_arrays([0, 1, 2], [1, 2, 3], [4, 5, 6]).fingerprint == base.fingerprint
    assert len({base.fingerprint, *(v.fingerprint for v in variants)}) == 5


def test_head_and_time_scaled():
    trace = Trace.from_arrays([0, 1, 2, 3], [1, 2, 3, 4], [4, 5, 6, 7])
    head = trace.head(2)
    np.testing.assert_array_equal(head.prompt_tokens, [1, 2])
    assert head.fingerprint != trace.fingerprint and head.meta.rows_dropped == {"head cut": 2}
    assert trace.head(10) is trace
    faster = trace.time_scaled(2.0)
    np.testing.assert_array_equal(faster.arrival_s, [0, 0.5, 1, 1.5])
    assert faster.mean_rate_rps == pytest.approx(2 * trace.mean_rate_rps)
    assert faster.fingerprint != trace.fingerprint and faster.meta.options["time_scale"] == 2.0
    for bad in (0, -1.0, float("inf")):
        with pytest.raises(ValueError, match="factor: must be (a finite number )?> 0"):
            trace.time_scaled(bad)
    with pytest.raises(ValueError, match="n: must be an integer >= 1"):
        trace.head(0)


def test_synthetic_flag_reaches_the_label():
    trace = Trace.from_arrays([0, 1], [1, 2], [3, 4], source="toy", synthetic=True)
    assert trace.is_synthetic and "synthetic" in trace.label


def test_direct_construction_checks_invariants():
    meta = Trace.from_arrays([0.0], [1], [1]).meta
    with pytest.raises(ValueError, match="sorted and start at 0.0"):
        Trace(np.array([1.0, 2.0]), np.array([1, 2], np.int32), np.array([1, 2], np.int32), meta)


token = st.integers(0, 2**31 - 1)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1e9, allow_nan=False), token, token), max_size=50))
def test_from_arrays_properties(rows):
    arrival, prompt, output = (list(column) for column in zip(*rows)) if rows else ([], [], [])
    trace = Trace.from_arrays(arrival, prompt, output)
    assert len(trace) == len(rows)
    assert np.all(np.diff(trace.arrival_s) >= 0)
    if rows:
        assert trace.arrival_s[0] == 0.0
    pairs = sorted(zip(trace.prompt_tokens.tolist(), trace.output_tokens.tolist()))
    assert pairs == sorted(zip(prompt, output))


# ---------------------------------------------------------------- careless input (issue 9, item 12)

@pytest.mark.parametrize("body, pattern", [
    # an unquoted thousands separator: must not read as prompt 1, output 234
    (f"{HEADER_MINIMAL}\n0,1,234,56\n", "line 2 has 4 fields but the header has 3"),
    (f"{HEADER_MINIMAL}\n0,1,2\n1,2,3\n2,1,234,5\n", "line 4 has 4 fields but the header has 3"),
    (f'{HEADER_MINIMAL}\n0,"1,234",56,7\n', "line 2 has 4 fields but the header has 3"),
    (f"{HEADER_12}\n5,ChatGPT,1,472,18,490,API log\n", "line 2 has 7 fields but the header has 6"),
    (f"{HEADER_MINIMAL}\n0,1,1e12\n", "line 2, column 'output_tokens': found 1e+12, expected at most 2,147,483,647"),
    (f"{HEADER_12}\n5,ChatGPT,472,18,490,   \n", "line 2, column 'Log Type': blank label"),
    ("  \n\t\n   ", "empty file (only whitespace"),
])
def test_careless_files_name_file_line_and_column(tmp_path, body, pattern):
    path = write(tmp_path, body)
    with pytest.raises(TraceFormatError, match=re.escape(pattern)) as excinfo:
        load_trace(path)
    assert str(path) in str(excinfo.value)


def test_quoted_thousands_separator_is_refused_with_its_column(tmp_path):
    path = write(tmp_path, f'{HEADER_MINIMAL}\n0,"1,234",56\n')
    with pytest.raises(TraceFormatError, match=re.escape("line 2, column 'prompt_tokens': found '1,234'")):
        load_trace(path)


def test_non_utf8_bytes_name_line_and_column(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(f"{HEADER_12}\n5,ChatGPT,472,18,490,API log\n".encode() + "6,Ch\xe2tGPT,1,2,3,API log\n".encode("latin-1"))
    with pytest.raises(TraceFormatError, match=re.escape("line 3, column 'Model': byte 0xe2 is not UTF-8")):
        load_trace(path)


def test_gzip_files_are_read_and_zip_files_refused(tmp_path):
    import gzip
    import zipfile

    text = f"{HEADER_12}\n{ROWS_12}"
    path = tmp_path / "BurstGPT_1.csv.gz"
    path.write_bytes(gzip.compress(text.encode()))
    plain = load_trace(write(tmp_path, text), use_real_timestamps=True)
    np.testing.assert_array_equal(load_trace(path, use_real_timestamps=True).prompt_tokens, plain.prompt_tokens)
    zipped = tmp_path / "trace.zip"
    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("trace.csv", text)
    with pytest.raises(TraceFormatError, match="zip archive, not a CSV; unzip it"):
        load_trace(zipped)
    broken = tmp_path / "broken.csv.gz"
    broken.write_bytes(gzip.compress(text.encode())[:40])
    with pytest.raises(TraceFormatError, match="gzip file that cannot be decompressed"):
        load_trace(broken)


def test_leading_blank_lines_are_skipped_and_lines_still_counted(tmp_path):
    trace = load_trace(write(tmp_path, f"\n  \n{HEADER_MINIMAL}\n1,2,3\n2,3,4\n"), rps_scaling=1.0)
    np.testing.assert_array_equal(trace.prompt_tokens, [2, 3])
    with pytest.raises(TraceFormatError, match=re.escape("line 5, column 'prompt_tokens': found 'x'")):
        load_trace(write(tmp_path, f"\n\n{HEADER_MINIMAL}\n1,2,3\n2,x,4\n", "bad.csv"))


def test_label_cells_are_trimmed_so_filters_match(tmp_path):
    path = write(tmp_path, f"{HEADER_12}\n1, ChatGPT ,10,1,11, API log\n2,ChatGPT,20,2,22,API log\n"
                           "3,GPT-4 ,30,3,33,Conversation log \n")
    chatgpt = load_trace(path, models="ChatGPT", use_real_timestamps=True)
    np.testing.assert_array_equal(chatgpt.prompt_tokens, [10, 20])
    assert len(load_trace(path, log_types="Conversation log")) == 1
    assert len(load_trace(path, models="GPT-4", log_types="Conversation log")) == 1


@pytest.mark.parametrize("arrival", [
    np.array(["2023-11-16T18:15:50", "2023-11-16T18:15:45", "2023-11-16T18:15:45.5"], dtype="datetime64[ns]"),
    np.array([5_000, 0, 500], dtype="timedelta64[ms]") + np.timedelta64(7, "s"),
    [np.datetime64("2023-01-01T00:00:05"), np.datetime64("2023-01-01T00:00:00"), np.datetime64("2023-01-01T00:00:00.5")],
])
def test_from_arrays_converts_datetimes_and_durations_to_seconds(arrival):
    import pandas as pd

    trace = Trace.from_arrays(arrival, [1, 2, 3], [1, 1, 1])
    np.testing.assert_allclose(trace.arrival_s, [0.0, 0.5, 5.0])  # a 5 s gap is 5 s, not 5e9
    np.testing.assert_array_equal(trace.prompt_tokens, [2, 3, 1])
    series = pd.Series(pd.to_datetime(np.asarray(arrival, dtype="datetime64[ns]")) if np.asarray(arrival).dtype.kind == "M"
                       else pd.to_timedelta(arrival))
    np.testing.assert_allclose(Trace.from_arrays(series, [1, 2, 3], [1, 1, 1]).arrival_s, [0.0, 0.5, 5.0])


def test_from_arrays_refuses_missing_times_and_dated_tokens():
    with pytest.raises(ValueError, match=re.escape("arrival_s[1] is NaT")):
        Trace.from_arrays(np.array(["2023-01-01", "NaT"], dtype="datetime64[s]"), [1, 2], [1, 2])
    with pytest.raises(ValueError, match=re.escape("prompt_tokens: must be plain numbers (tokens), got timedelta64[s]")):
        Trace.from_arrays([0, 1], np.array([1, 2], dtype="timedelta64[s]"), [1, 2])
    with pytest.raises(ValueError, match=re.escape("prompt_tokens[0] = 1e+12 is more than 2,147,483,647 tokens")):
        Trace.from_arrays([0], [1e12], [1])


@pytest.mark.parametrize("body", [
    f"{HEADER_MINIMAL}\r\n0,1,2\r\n1,2,3\r\n",  # Windows line ends
    '"arrival_s","prompt_tokens","output_tokens"\n"0","1","2"\n1,2,3\n',  # everything quoted
    f"{HEADER_MINIMAL}\n0,1,2\n1,2,3\n\n  \n\t\n",  # whitespace-only lines at the end
])
def test_odd_but_valid_files_are_read(tmp_path, body):
    trace = load_trace(write(tmp_path, body), use_real_timestamps=True)
    np.testing.assert_array_equal(trace.arrival_s, [0.0, 1.0])
    np.testing.assert_array_equal(trace.prompt_tokens, [1, 2])


def test_a_whitespace_only_line_inside_the_data_names_its_line(tmp_path):
    path = write(tmp_path, f"{HEADER_MINIMAL}\n0,1,2\n   \n1,2,3\n")
    with pytest.raises(TraceFormatError, match=re.escape("line 3, column 'arrival_s': found only whitespace")):
        load_trace(path)


def test_bad_path_type_and_seed_are_refused(tmp_path):
    with pytest.raises(TypeError, match="path must be a dataset name .* or a file path, got 123"):
        load_trace(123)
    for seed in (-1, 1.5, True):
        with pytest.raises(ValueError, match="seed: must be an integer >= 0"):
            load_trace(num_requests=5, seed=seed)
