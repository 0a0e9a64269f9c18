"""The image checks' batched path (analytics.data_issues.images.measure_images, used by
read_images) against the per-image reference (measure_image: PIL and imagehash, one image at a
time): the same raw properties, grayscale flags, byte hashes and perceptual-hash bits on
random, grey, dark, light, blurred, constant and mixed-size images, other modes and formats,
unreadable files, and the digits sample."""

from __future__ import annotations

import io

import imagehash
import numpy as np
import pytest
from PIL import Image, ImageFilter

from analytics.data_issues.images import (BATCH_MAX_PIXELS, _pixel_kernels, measure_image, measure_images,
                                          read_images)
from analytics.samples import sample_by_key


def encode(image: Image.Image, image_format: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format)
    return buffer.getvalue()


def photo(rng: np.random.Generator, height: int, width: int, *, colour: bool = True, scale: float = 1.0,
          lift: float = 0.0) -> Image.Image:
    """A gradient with noise (many grey levels, like a photograph), darkened by ``scale`` or
    lightened by ``lift``."""
    y, x = np.mgrid[0:height, 0:width]
    base = x * rng.uniform(0, 4) + y * rng.uniform(0, 4)
    pixels = np.clip(base[..., None] + rng.normal(0, 25, (height, width, 3 if colour else 1)), 0, 255)
    pixels = lift + pixels * scale * (1 - lift / 255)
    pixels = pixels.astype(np.uint8)
    return Image.fromarray(pixels if colour else pixels[..., 0])


def assert_same(datas: list[bytes | None]) -> None:
    """measure_images(datas) equals measure_image on each (an unreadable row where it raises)."""
    batched = measure_images(datas)
    assert len(batched.raw) == len(datas)
    for i, data in enumerate(datas):
        try:
            byte_hash, perceptual, raw = measure_image(data) if data is not None else (None, None, None)
        except (OSError, ValueError):
            raw = None
        if raw is None:
            assert not batched.readable[i], i
            assert np.isnan(batched.raw.iloc[i, :7].to_numpy(float)).all(), i
            continue
        assert batched.readable[i], i
        np.testing.assert_allclose(batched.raw.iloc[i, :7].to_numpy(float), np.array(raw[:7], float), rtol=0,
                                   atol=1e-9, err_msg=f"image {i}")
        assert bool(batched.raw["grayscale"].iloc[i]) == raw[7], i
        assert int(batched.byte_hashes[i]) == byte_hash, i
        assert int(batched.phashes[i]) == perceptual, f"image {i}: perceptual hash bits differ"


def test_batched_path_equals_reference_on_random_grey_dark_light_blurred_and_constant_images():
    rng = np.random.default_rng(0)
    images = [photo(rng, 32, 32) for _ in range(24)]                                   # RGB photos
    images += [photo(rng, 32, 32, colour=False) for _ in range(12)]                    # L
    images += [photo(rng, 32, 32, scale=0.15) for _ in range(6)]                       # dark
    images += [photo(rng, 32, 32, lift=230) for _ in range(6)]                         # light
    images += [photo(rng, 32, 32).filter(ImageFilter.GaussianBlur(2)) for _ in range(6)]  # blurred
    images += [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(6)]  # noise
    images += [Image.new("RGB", (32, 32), (v, v, v)) for v in (0, 90, 255)]            # constant, equal channels
    images += [Image.new("RGB", (32, 32), (200, 40, 40)), Image.new("L", (32, 32), 7)]  # constant
    images += [Image.merge("RGB", [photo(rng, 32, 32, colour=False)] * 3)]             # grey stored as RGB
    datas = [encode(image) for image in images]
    assert_same(datas)
    # the dark ones are darker and the blurred ones blurrier, as a sanity check of the data
    raw = measure_images(datas).raw
    assert raw["brightness_perc_99"][36:42].max() < raw["brightness_perc_99"][:24].min()
    assert raw["brightness_perc_5"][42:48].min() > raw["brightness_perc_5"][:24].max()
    assert raw["blurriness"][48:54].max() < raw["blurriness"][:24].min()


def test_batched_path_equals_reference_on_mixed_sizes_modes_and_formats():
    rng = np.random.default_rng(1)
    datas: list[bytes | None] = []
    # tiny (FIND_EDGES copies images under 3×3), odd, resized for blur (> 64 px a side), and
    # one above BATCH_MAX_PIXELS (measured by the reference itself)
    for height, width in [(1, 1), (2, 5), (3, 3), (8, 8), (31, 33), (64, 64), (65, 30), (100, 120), (129, 128)]:
        for colour in (True, False):
            datas.append(encode(photo(rng, height, width, colour=colour)))
    assert 129 * 128 > BATCH_MAX_PIXELS
    rgb, grey = photo(rng, 20, 24), photo(rng, 20, 24, colour=False)
    datas += [encode(rgb.convert("P")), encode(rgb.convert("RGBA")), encode(grey.convert("LA")),
              encode(grey.convert("1")), encode(rgb.convert("CMYK"), "TIFF"), encode(rgb.convert("CMYK"), "JPEG"),
              encode(Image.fromarray(rng.integers(0, 65535, (20, 24), dtype=np.uint16))),   # I;16
              encode(grey.convert("I"), "TIFF"), encode(grey.convert("F"), "TIFF"),
              encode(rgb, "JPEG"), encode(grey, "JPEG"), encode(rgb, "BMP"), encode(rgb, "WEBP"),
              b"not an image", encode(rgb)[:60], None]                                     # unreadable
    # the same shape again after other shapes: groups gather images from anywhere in the batch
    datas += [encode(photo(rng, 8, 8)) for _ in range(3)]
    assert_same(datas)


def test_perceptual_hash_bits_equal_imagehash_on_the_digits_sample():
    """Real images: the digits sample (8×8 greyscale PNG, resized to 32×32 by LANCZOS for the
    hash), all read through read_images as the checks call it, every third file compared with
    the reference (the reference costs about 1 ms a file on a loaded machine)."""
    paths = load_digits_paths()
    readout = read_images(paths, chunk=200)
    assert readout.readable.all()
    for i, path in list(enumerate(paths))[::3]:
        with open(path, "rb") as handle:
            byte_hash, perceptual, raw = measure_image(handle.read())
        assert int(readout.phashes[i]) == perceptual, path
        if i % 6 == 0:  # and imagehash's own bits, row by row, first bit highest
            with Image.open(path) as image:
                bits = imagehash.phash(image.convert("L")).hash.ravel()
            assert int(readout.phashes[i]) == int("".join("1" if b else "0" for b in bits), 2), path
        assert int(readout.byte_hashes[i]) == byte_hash
        np.testing.assert_allclose(readout.raw.iloc[i, :7].to_numpy(float), np.array(raw[:7], float), rtol=0, atol=1e-9)
        assert bool(readout.raw["grayscale"].iloc[i]) == raw[7]


def load_digits_paths() -> list[str]:
    from analytics.datasets import load_dataset

    return load_dataset(sample_by_key("digits").path).table["image"].tolist()


def test_read_images_keeps_rows_aligned_across_chunks_threads_and_unreadable_files(tmp_path):
    rng = np.random.default_rng(2)
    paths, datas = [], []
    for i in range(23):
        kind = i % 4
        if kind == 3 and i % 8 == 3:
            paths.append(str(tmp_path / f"missing_{i}.png"))  # no such file
            datas.append(None)
            continue
        image = photo(rng, 32, 32) if kind == 0 else photo(rng, 16, 40, colour=False) if kind == 1 else photo(rng, 9, 9)
        data = encode(image) if kind != 3 else b"\x89PNG broken"
        path = tmp_path / f"img_{i}.png"
        path.write_bytes(data)
        paths.append(str(path))
        datas.append(data)
    fractions = []
    readout = read_images(paths, chunk=5, workers=2, progress=lambda fraction, message: fractions.append(fraction))
    expected = measure_images(datas)
    assert fractions[-1] == 1.0 and len(fractions) == 5
    np.testing.assert_array_equal(readout.readable, expected.readable)
    np.testing.assert_array_equal(readout.byte_hashes, expected.byte_hashes)
    np.testing.assert_array_equal(readout.phashes, expected.phashes)
    np.testing.assert_array_equal(readout.raw.to_numpy(float), expected.raw.to_numpy(float))
    assert not readout.readable[[3, 7, 11]].any() and readout.readable[[0, 1, 2]].all()
    assert list(readout.raw.columns) == list(read_images([]).raw.columns)
    assert read_images([]).raw.shape == (0, 8)
    # without perceptual hashes: the same properties, hashes left at 0
    plain = read_images(paths, phash=False, chunk=5)
    np.testing.assert_array_equal(plain.raw.to_numpy(float), expected.raw.to_numpy(float))
    assert not plain.phashes.any()


@pytest.mark.parametrize("height, width", [(1, 1), (2, 7), (3, 3), (5, 4), (32, 32)])
def test_pixel_passes_follow_pil(height, width):
    """The compiled loops against PIL itself: RGB→L, histograms, entropy and FIND_EDGES."""
    colour_pass, grey_pass, entropy = _pixel_kernels()
    rng = np.random.default_rng(height * 100 + width)
    pixels = rng.integers(0, 256, (6, height, width, 3), dtype=np.uint8)
    pixels[0] = 128
    grey = np.empty((6, height, width), np.uint8)
    squares, counts, same = np.empty((6, height * width)), np.zeros((6, 768), np.int64), np.empty(6, bool)
    colour_pass(pixels, grey, squares, counts, same)
    edge_counts, sums, squares_of_edges = np.zeros((6, 256), np.int64), np.empty(6, np.int64), np.empty(6, np.int64)
    grey_pass(grey, edge_counts, sums, squares_of_edges)
    entropies = np.empty(6)
    entropy(counts, entropies)
    assert same.tolist() == [True] + [False] * 5
    for i in range(6):
        image = Image.fromarray(pixels[i])
        as_l = image.convert("L")
        np.testing.assert_array_equal(grey[i], np.asarray(as_l))
        assert counts[i].tolist() == image.histogram()
        assert entropies[i] == image.entropy()
        assert edge_counts[i].tolist() == as_l.histogram()
        edges = np.asarray(as_l.filter(ImageFilter.FIND_EDGES)).astype(np.int64)
        assert (sums[i], squares_of_edges[i]) == (edges.sum(), (edges * edges).sum())


def test_libpng_path_gives_pils_pixels_and_leaves_other_pngs_to_pil():
    from analytics.data_issues.images import _decode_png

    rng = np.random.default_rng(3)
    rgb, grey = photo(rng, 20, 24), photo(rng, 20, 24, colour=False)
    interlaced = io.BytesIO()
    rgb.save(interlaced, format="PNG", interlace=1)
    for data in (encode(rgb), encode(grey), interlaced.getvalue()):
        pixels = _decode_png(data)
        assert pixels is not None, "imagecodecs (a dependency) decodes 8-bit grey and RGB PNGs"
        assert np.array_equal(pixels, np.asarray(Image.open(io.BytesIO(data))))
    with_transparency = io.BytesIO()
    rgb.save(with_transparency, format="PNG", transparency=(0, 0, 0))  # a tRNS chunk: PIL keeps RGB
    assert Image.open(io.BytesIO(with_transparency.getvalue())).mode == "RGB"
    others = [with_transparency.getvalue(), encode(rgb.convert("P")), encode(rgb.convert("RGBA")),
              encode(grey.convert("LA")), encode(grey.convert("1")),
              encode(Image.fromarray(rng.integers(0, 65535, (20, 24), dtype=np.uint16))),
              encode(rgb)[:60], encode(photo(rng, 129, 128)), encode(rgb, "JPEG"), b"\x89PNG\r\n\x1a\n"]
    for data in others:
        assert _decode_png(data) is None
    assert_same([encode(rgb), encode(grey), interlaced.getvalue(), *others])
