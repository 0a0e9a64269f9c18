"""The browser scatter's encodings (ui/scatter/encoding.py and its JavaScript twin), its colour
channels and hover lines, and that the shipped bundle was built from the sources here."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from ui.figures import COLOUR_SCALE, MAX_CATEGORIES, OTHER_COLOUR, PALETTE, colour_channel
import ui.scatter
from ui.scatter import ScatterPoints, hover_lines, sent_once
from ui.scatter.bundle import BUILD_DIR, FRONTEND_DIR, built_digest, sources_digest
from ui.scatter.encoding import (VALUE_MISSING, RowEncodingError, code_dtype, column_bytes, decode_rows, encode_rows,
                                 pack_mask, quantise_values, rows_to_runs, runs_to_rows, unpack_mask)

RNG = np.random.default_rng(20261130)


def random_rows(n: int, density: float) -> np.ndarray:
    return np.flatnonzero(RNG.random(n) < density)


ROW_SETS = {
    "empty": (1000, np.array([], dtype=np.int64)),
    "all": (1003, np.arange(1003)),
    "first and last": (77, np.array([0, 76])),
    "one run in the middle": (10_000, np.arange(4000, 6500)),
    "sparse": (50_000, random_rows(50_000, 0.001)),
    "half": (50_001, random_rows(50_001, 0.5)),
    "dense": (9_999, random_rows(9_999, 0.97)),
    "clustered runs": (100_000, np.flatnonzero(np.repeat(RNG.random(1000) < 0.3, 100))),
}


@pytest.mark.parametrize("name", list(ROW_SETS))
def test_rows_round_trip(name):
    n, rows = ROW_SETS[name]
    encoded = encode_rows(rows, n)
    assert encoded["n"] == n and encoded["format"] in ("bits", "runs")
    json.dumps(encoded)  # travels as JSON
    decoded = decode_rows(encoded, n=n)
    assert decoded.dtype == np.int64
    np.testing.assert_array_equal(decoded, rows)


def test_the_shorter_encoding_is_chosen():
    n = 80_000
    sparse = encode_rows(np.array([5, 6, 7, 100]), n)
    assert sparse["format"] == "runs"
    assert base64.b64decode(sparse["data"]) == bytes([5, 3, 92, 1])  # (start 5, 3 rows), (8 + 92, 1 row)
    everything = encode_rows(np.arange(n), n)
    assert everything["format"] == "runs"  # one run: 0, then 80,000 in three bytes
    assert base64.b64decode(everything["data"]) == bytes([0, 0x80, 0xF1, 0x04])
    scattered = encode_rows(np.arange(0, n, 2), n)  # every other row: runs would take 2 bytes a row
    assert scattered["format"] == "bits" and len(base64.b64decode(scattered["data"])) == n // 8
    for encoded in (sparse, everything, scattered):
        size = len(base64.b64decode(encoded["data"]))
        assert size <= (n + 7) // 8 and size <= len(rows_to_runs(decode_rows(encoded, n=n)))


def test_rows_are_sorted_and_deduplicated_before_encoding():
    encoded = encode_rows(np.array([9, 3, 3, 0, 9]), 10)
    np.testing.assert_array_equal(decode_rows(encoded, n=10), [0, 3, 9])


def test_a_million_rows_round_trip_quickly():
    import time

    n = 1_000_000
    for density in (0.0001, 0.2, 0.9):
        rows = random_rows(n, density)
        started = time.perf_counter()
        decoded = decode_rows(encode_rows(rows, n), n=n)
        assert time.perf_counter() - started < 2.0
        np.testing.assert_array_equal(decoded, rows)


def test_runs_with_large_gaps_and_lengths():
    # varints of up to five bytes: rows near 2**31 in a set of 2**31 rows (never allocated as bits)
    n = 2**31
    rows = np.concatenate([[0], np.arange(2**28 - 3, 2**28 + 3), [2**31 - 1]])
    encoded = encode_rows(rows, n)
    assert encoded["format"] == "runs"
    np.testing.assert_array_equal(decode_rows(encoded, n=n), rows)
    np.testing.assert_array_equal(runs_to_rows(rows_to_runs(np.arange(300, 300 + 2**21)), 2**22),
                                  np.arange(300, 300 + 2**21))


@pytest.mark.parametrize("encoded, message", [
    ({"n": 10, "format": "runs"}, "keys"),
    ({"n": 11, "format": "runs", "data": ""}, "made for 11 rows"),
    ({"n": 10, "format": "rle", "data": ""}, "unknown row set format"),
    ({"n": 10, "format": "bits", "data": "not base64!"}, "not base64"),
    ({"n": 10, "format": "bits", "data": base64.b64encode(b"\x01").decode()}, "2 bytes"),
    ({"n": 10, "format": "bits", "data": base64.b64encode(b"\x00\x04").decode()}, "past its 10 rows"),
    ({"n": 10, "format": "runs", "data": base64.b64encode(b"\x02\x85").decode()}, "truncated"),
    ({"n": 10, "format": "runs", "data": base64.b64encode(b"\x02").decode()}, "without its length"),
    ({"n": 10, "format": "runs", "data": base64.b64encode(b"\x08\x03").decode()}, "row 10 of a map of 10"),
    ({"n": 10, "format": "runs", "data": base64.b64encode(b"\x02\x00").decode()}, "empty run"),
    ({"n": 10, "format": "runs", "data": base64.b64encode(b"\xff\xff\xff\xff\xff\x01\x01").decode()}, "too large"),
])
def test_malformed_row_sets_are_refused(encoded, message):
    with pytest.raises(RowEncodingError, match=message):
        decode_rows(encoded, n=10)


def test_out_of_range_rows_are_refused():
    with pytest.raises(RowEncodingError, match=r"\[0, 5\)"):
        encode_rows(np.array([5]), 5)


def test_masks_and_columns_are_little_endian_bytes():
    mask = np.zeros(13, dtype=bool)
    mask[[0, 9, 12]] = True
    packed = pack_mask(mask)
    assert packed == bytes([0b00000001, 0b00010010])
    np.testing.assert_array_equal(unpack_mask(packed, 13), mask)
    values = np.array([1.5, -2.0, np.nan], dtype=np.float64)
    raw = column_bytes(values, "float32")
    assert raw[:4] == np.float32(1.5).tobytes() and len(raw) == 12
    np.testing.assert_array_equal(np.frombuffer(raw, "<f4")[:2], [1.5, -2.0])
    assert np.isnan(np.frombuffer(raw, "<f4")[2])
    assert column_bytes(np.array([1, 258]), "uint16") == bytes([1, 0, 2, 1])
    assert [code_dtype(k) for k in (1, 256, 257, 65_536, 65_537)] == ["uint8", "uint8", "uint16", "uint16", "uint32"]


def test_colour_channel_categories_and_scale():
    labels = pd.Series(["b", "a", None, "b"] + [f"rare{i}" for i in range(MAX_CATEGORIES)])
    channel = colour_channel(labels, "label")
    assert not channel.numeric and channel.names[-1] == "other (3 values)"
    assert len(channel.names) == MAX_CATEGORIES + 1 and channel.colours[-1] == OTHER_COLOUR
    assert channel.colours[:MAX_CATEGORIES] == tuple(PALETTE[:MAX_CATEGORIES])
    # the most frequent values keep their own colour, listed in natural order
    assert [channel.names[c] for c in channel.codes[:4]] == ["b", "a", "(missing)", "b"]
    assert channel.names[:3] == ("(missing)", "a", "b")
    assert sorted(channel.names[c] for c in channel.codes[4:]).count("other (3 values)") == 3
    assert (channel.codes < len(channel.names)).all() and (channel.codes >= 0).all()
    numbers = pd.Series(np.r_[np.linspace(-1, 3, 30), np.nan])
    scale = colour_channel(numbers, "loss")
    assert scale.numeric and scale.values.dtype == np.float32 and (scale.low, scale.high) == (-1.0, 3.0)
    assert np.isnan(scale.values[-1]) and COLOUR_SCALE[0] == "#440154"
    # few distinct numbers are categories, in numeric order
    assert colour_channel(pd.Series([10, 9, 100, 9]), "epochs").names == ("9", "10", "100")


def test_category_codes_count_values_as_the_text_they_are_shown_as():
    from ui.figures import category_codes

    # ties at the cut keep the values that came first; the rest are "other" (-1)
    values = pd.Series([f"v{i:02d}" for i in range(MAX_CATEGORIES + 5)] * 2 + ["v30"] * 3)
    codes, top, distinct = category_codes(values)
    assert distinct == MAX_CATEGORIES + 6 and len(top) == MAX_CATEGORIES and "v30" in top
    assert "v19" not in top and "v00" in top and "v18" in top
    assert [top[c] if c >= 0 else None for c in codes[:3]] == ["v00", "v01", "v02"]
    assert codes[MAX_CATEGORIES + 4] == -1  # v24: a tie past the cut
    # missing values are one category; -0.0 is 0.0; numbers in numeric order
    codes, top, distinct = category_codes(pd.Series([0.5, np.nan, -0.0, 0.0, 10.0, None]))
    assert top == ["(missing)", "0.0", "0.5", "10.0"] or top == ["0.0", "0.5", "10.0", "(missing)"]
    assert distinct == 4 and [top[c] for c in codes] == ["0.5", "(missing)", "0.0", "0.0", "10.0", "(missing)"]
    # Python objects of mixed types: 1 and True are different texts
    codes, top, _ = category_codes(pd.Series([1, True, "1", None], dtype=object))
    assert [top[c] for c in codes] == ["1", "True", "1", "(missing)"]
    # categories and a non-default index
    codes, top, _ = category_codes(pd.Series(pd.Categorical(["b", "a", None, "b"]), index=[7, 3, 9, 1]))
    assert [top[c] for c in codes] == ["b", "a", "(missing)", "b"]


def test_quantised_values_keep_each_value_in_its_step():
    values = np.r_[RNG.normal(2.0, 3.0, 100_000), [np.nan, np.inf, -np.inf, -1e9, 1e9]]
    low, high = -10.0, 14.0
    codes = quantise_values(values, low, high)
    assert codes.dtype == np.uint16 and len(codes) == len(values)
    assert (codes[-5:-2] == VALUE_MISSING).all()  # NaN and infinities are missing
    assert codes[-2] == 0 and codes[-1] == VALUE_MISSING - 1  # outside the range: clipped to its ends
    inside = (values >= low) & (values <= high)
    t = (values[inside] - low) / (high - low) * VALUE_MISSING
    q = codes[inside].astype(np.float64)
    assert ((q <= t) & ((t < q + 1) | (q == VALUE_MISSING - 1))).all()
    assert quantise_values(np.array([low, high]), low, high).tolist() == [0, VALUE_MISSING - 1]
    # the browser draws step code >> 8 of 256: the step of the value itself, but for values within
    # one code (1/65,535 of the range) of a step's edge
    step = np.floor((values[inside] - low) / (high - low) * 256).clip(0, 255)
    differs = (codes[inside] >> 8) != step
    edge = np.abs((values[inside] - low) / (high - low) * 256 - np.round((values[inside] - low) / (high - low) * 256))
    assert (edge[differs] < 256 / VALUE_MISSING).all()
    assert differs.mean() < 0.01
    # one value everywhere: every code 0; missing stays missing
    assert quantise_values(np.array([5.0, 5.0, np.nan]), 5.0, 5.0).tolist() == [0, 0, VALUE_MISSING]


def test_a_numeric_colour_goes_as_uint16_codes_with_its_exact_values_apart(monkeypatch):
    n = 1000
    values = pd.Series(np.r_[np.linspace(0.0, 1.0, n - 1), np.nan])
    points = ScatterPoints(x=np.zeros(n), y=np.zeros(n), key=("test-colour-args", n))
    built = []
    original = ui.scatter.colour_channel
    monkeypatch.setattr(ui.scatter, "colour_channel", lambda *a: built.append(a) or original(*a))
    args, encoded = ui.scatter._colour_args("k", points, values, "confidence", ())
    assert args["kind"] == "values" and (args["min"], args["max"]) == (0.0, 1.0) and args["missing"]
    assert args["values"]["dtype"] == "uint16" and args["values"]["bytes"] == 2 * n and args["values"]["length"] == n
    assert args["exact"]["dtype"] == "float32" and args["exact"]["bytes"] == 4 * n
    entry = ui.scatter._encoded[("test-colour-args", n, "colour", "confidence")]
    np.testing.assert_array_equal(np.frombuffer(entry.data, "<u2"), quantise_values(values.to_numpy(np.float32), 0.0, 1.0))
    np.testing.assert_array_equal(np.frombuffer(entry.meta["exact"].data, "<f4"), values.to_numpy(np.float32))
    assert entry.nbytes == 6 * n and encoded is entry
    # a rerun with the same column encodes nothing again
    again, _ = ui.scatter._colour_args("k", points, values, "confidence", ())
    assert again == args and len(built) == 1
    categories, labels = ui.scatter._colour_args("k", points, pd.Series(["a", "b"] * (n // 2)), "split", ())
    assert categories["codes"]["dtype"] == "uint8" and "exact" not in categories

    # the colour travels inside the render message of the run that changes it, once
    memory: dict = {}
    assert sent_once(memory, "map", encoded) == entry.data
    assert sent_once(memory, "map", encoded) is None  # a rerun: the browser has it
    assert sent_once(memory, "map", labels) == labels.data and sent_once(memory, "other", labels) == labels.data
    assert sent_once(memory, "map", encoded) == entry.data  # back to the score: sent again


def test_hover_lines_are_plain_text_on_one_line():
    lines = hover_lines(pd.Series(["a1", "b2"]), pd.Series(["<b>bold</b>\nnext   line", "x" * 80]), width=21)
    assert lines == ["a1: <b>bold</b> next line", "b2: " + "x" * 21]
    assert hover_lines(pd.Series([1, 2])) == ["1", "2"]


NODE = shutil.which("node")


@pytest.mark.skipif(NODE is None, reason="Node.js is not installed (the browser tests cover the JavaScript too)")
def test_javascript_and_python_encode_the_same_way():
    n = 20_011
    sets = [[], list(range(n)), [0, n - 1], random_rows(n, 0.002).tolist(), random_rows(n, 0.6).tolist(),
            list(range(100, 5000)) + list(range(7000, 7003))]
    script = f"""
        import {{ encodeRows, decodeRows }} from '{FRONTEND_DIR / "src" / "encoding.js"}';
        const chunks = [];
        for await (const chunk of process.stdin) chunks.push(chunk);
        const input = JSON.parse(chunks.join(''));
        const out = input.sets.map((rows) => encodeRows(Uint32Array.from(rows), input.n));
        const back = input.encoded.map((e) => Array.from(decodeRows(e)));
        console.log(JSON.stringify({{ out, back }}));
    """
    python_encoded = [encode_rows(np.array(rows, dtype=np.int64), n) for rows in sets]
    result = subprocess.run([NODE, "--input-type=module", "-e", script],
                            input=json.dumps({"n": n, "sets": sets, "encoded": python_encoded}),
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    for rows, from_js, python, back in zip(sets, answer["out"], python_encoded, answer["back"]):
        assert from_js == python  # the same format and the same bytes
        np.testing.assert_array_equal(decode_rows(from_js, n=n), rows)
        assert back == rows


def test_the_shipped_bundle_was_built_from_these_sources():
    assert built_digest() == sources_digest(), (
        "ui/scatter/frontend/build is out of date with its sources: run `npm ci && npm run build` in "
        "ui/scatter/frontend and commit the build folder")
    index = (BUILD_DIR / "index.html").read_text()
    assert 'src="scatter.js"' in index and 'href="scatter.css"' in index
    assert (BUILD_DIR / "scatter.js").stat().st_size < 400_000  # regl-scatterplot and our code, minified
    lock = json.loads((FRONTEND_DIR / "package-lock.json").read_text())
    assert lock["packages"]["node_modules/regl-scatterplot"]["version"] == \
        json.loads((FRONTEND_DIR / "package.json").read_text())["dependencies"]["regl-scatterplot"]


@pytest.mark.skipif(NODE is None or not (FRONTEND_DIR / "node_modules" / "esbuild").is_dir(),
                    reason="needs Node.js and `npm ci` in ui/scatter/frontend")
def test_rebuilding_gives_the_shipped_bundle(tmp_path):
    result = subprocess.run([NODE, str(FRONTEND_DIR / "build.mjs")], cwd=FRONTEND_DIR, capture_output=True,
                            text=True, timeout=120, env=dict(os.environ, BUILD_OUT=str(tmp_path)))
    assert result.returncode == 0, result.stderr
    for name in ("index.html", "scatter.js", "scatter.css", "SOURCES.sha256"):
        assert (tmp_path / name).read_bytes() == (BUILD_DIR / name).read_bytes(), f"{name} differs from its rebuild"


def test_point_size_shrinks_with_the_number_of_points():
    from ui.scatter import point_size

    assert [point_size(n) for n in (1_000, 20_000, 20_001, 300_000, 300_001, 1_000_000)] == [6, 6, 4, 4, 3, 3]
    assert [point_size(n, base=5.0) for n in (10_000, 100_000, 1_000_000)] == [7, 5, 3]
    assert point_size(1_000_000, base=2.0) == 2.0  # never larger than asked
