"""Image properties after CleanVision, read in one pass with each file's content hashes.

Every image file is read once; from its bytes come a 64-bit hash of the bytes (exact copies),
its 64-bit perceptual hash (``imagehash.phash``; near copies) and the raw properties below.
Scores and flags then follow CleanVision's definitions (cleanvision 0.3.7,
``issue_managers/image_property.py``) with the thresholds cleanlab Datalab passes to it
(``DEFAULT_CLEANVISION_ISSUES``): lower score = more of an issue, flag = score < threshold.

=================  ======================================================  =============
property           score                                                   flag
=================  ======================================================  =============
dark               99th percentile of pixel brightness                     < 0.32
light              1 − 5th percentile of pixel brightness                  < 0.05
blurry             min(1, 1 − e^(−0.01·σ_edges) + s), s = 1 − e^(−0.01·σ_hist) < 0.29
                   when above 0.18 else 0 (greyscale image at most 64 px,
                   σ_edges the std of PIL's FIND_EDGES, σ_hist the std of
                   its 256-bin histogram)
low_information    min(1, 0.1 · entropy of the histogram)                  < 0.15
odd_size           1 − |√(w·h) − mid| / gap, clipped to [0, 1]; mid and gap  < 0.5 (< 1 when
                   from Q1 − 3·IQR and Q3 + 3·IQR over the dataset          gap is 0)
odd_aspect_ratio   min(w/h, h/w)                                           < 0.35
grayscale          0 for a greyscale image, else 1                         = 0
=================  ======================================================  =============

Brightness of a pixel is √(0.241 r² + 0.691 g² + 0.068 b²) / 255 (a greyscale pixel: its
value / 255). Two deliberate differences from CleanVision, which reads an image in whatever
mode the file has: palette, CMYK and 16-bit images are converted to RGB or 8-bit greyscale
first (CleanVision reads palette indices as brightness), and an RGB file whose three channels
are equal counts as greyscale (CleanVision looks at the file's mode only).

We compute these ourselves, with PIL and numpy, rather than through the ``cleanvision``
package: it would add matplotlib and four more packages to the app for seven short formulas,
and it reads each image again, apart from the hashes. The scores match it on images it reads
correctly (checked on the digits sample; see the test suite).

Two paths compute the same numbers. :func:`measure_image` measures one image with PIL and
``imagehash`` and is the reference. :func:`measure_images`, which :func:`read_images` uses,
decodes each image once, converts it to RGB or L exactly as the reference does, and measures
all images of one shape and mode together (the reference's few hundred small PIL and numpy
calls cost about ten times the decoding of a 32×32 PNG). Three small numba loops reproduce
PIL's C code operation by operation — its integer RGB→L formula, its 768/256-bin histograms
and ``Image.entropy``, its FIND_EDGES filter (borders copied, interior clipped to [0, 255]) —
and the brightness's sum of squares; the percentiles come from sorted rows (RGB) or the
histogram (L), and the perceptual hash from imagehash's own ``scipy.fftpack`` DCT-II, batched
along an axis. The hashes are equal bit for bit and so are the properties (the test suite
compares both paths). Images above :data:`BATCH_MAX_PIXELS` go through the reference one by
one: for them decoding dominates and a batch would hold too much memory.

An 8-bit grey or RGB PNG is decoded with libpng through ``imagecodecs`` when it is installed
(21 µs for a 32×32 PNG against PIL's 37 µs: PIL's Python code around the decoder costs more than
the decoding); the pixels are the same (PNG is lossless; the tests compare both), and anything
else — another mode, a transparency chunk, a file libpng refuses — goes to PIL.
"""

from __future__ import annotations

import functools
import hashlib
import io
import math
import os
import struct
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

from analytics.data_issues.registry import IMAGE_PROPERTIES

try:  # libpng, for the common PNGs (optional: PIL decodes everything without it)
    from imagecodecs import png_decode as _png_decode
except ImportError:  # pragma: no cover - imagecodecs is a dependency; a trimmed install may lack it
    _png_decode = None

__all__ = ["ImageReadout", "THRESHOLDS", "BATCH_MAX_PIXELS", "read_images", "property_scores", "measure_image",
           "measure_images"]

#: Flag thresholds, as cleanlab Datalab configures CleanVision (low_information: 0.15, not
#: CleanVision's own 0.3). odd_size has none: it depends on the spread of sizes.
THRESHOLDS = {"dark": 0.32, "light": 0.05, "blurry": 0.29, "low_information": 0.15, "odd_aspect_ratio": 0.35}
_BLUR_MAX_SIDE = 64          # CleanVision's MAX_RESOLUTION_FOR_BLURRY_DETECTION
_BLUR_NORMALISER = 0.01
_BLUR_COLOUR_THRESHOLD = 0.18
_ENTROPY_NORMALISER = 0.1
_IQR_FACTOR = 3.0
_GREY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")
_RAW = ("width", "height", "brightness_perc_99", "brightness_perc_5", "entropy", "blurriness",
        "blurriness_grayscale_std", "grayscale")


@dataclass(frozen=True, eq=False)
class ImageReadout:
    """What one pass over the image files gives.

    Attributes
    ----------
    raw : DataFrame of shape (n, 8)
        width, height, brightness_perc_99, brightness_perc_5, entropy, blurriness,
        blurriness_grayscale_std (floats; NaN for unreadable files) and grayscale (bool).
    byte_hashes : ndarray of shape (n,), uint64
        Hash of each file's bytes.
    phashes : ndarray of shape (n,), uint64
        Perceptual hash (``imagehash.phash``, 8×8 bits).
    readable : ndarray of shape (n,), bool
    """

    raw: pd.DataFrame
    byte_hashes: np.ndarray
    phashes: np.ndarray
    readable: np.ndarray


def _brightness(image: Image.Image) -> np.ndarray:
    pixels = np.asarray(image)
    if pixels.ndim == 2:
        return pixels / 255.0
    red, green, blue = (pixels[:, :, c].astype(np.int64) for c in range(3))
    return np.sqrt(0.241 * red * red + 0.691 * green * green + 0.068 * blue * blue) / 255


_LEVELS = np.arange(256, dtype=np.float64)


def _percentiles(values: np.ndarray, q: list[float]) -> np.ndarray:
    """``np.percentile(values, q)`` (linear interpolation, numpy's own lerp) by one partition,
    without its per-call overhead (it dominated on small images)."""
    flat = values.ravel()
    positions = np.asarray(q, dtype=np.float64) / 100 * (len(flat) - 1)
    low = np.floor(positions).astype(np.int64)
    high = np.minimum(low + 1, len(flat) - 1)
    part = np.partition(flat, np.unique(np.concatenate([low, high])))
    a, b, t = part[low], part[high], positions - low
    return np.where(t >= 0.5, b - (b - a) * (1 - t), a + (b - a) * t)


def _blurriness(image: Image.Image) -> tuple[float, float]:
    ratio = max(image.width, image.height) / _BLUR_MAX_SIDE
    if ratio > 1:
        image = image.resize((max(int(image.width // ratio), 1), max(int(image.height // ratio), 1)))
    grey = image.convert("L")
    # ImageStat.Stat(edges).var[0], from the histogram as ImageStat computes it, in numpy
    counts = np.asarray(grey.filter(ImageFilter.FIND_EDGES).histogram(), dtype=np.float64)
    total = counts.sum()
    variance = counts @ (_LEVELS * _LEVELS) / total - (counts @ _LEVELS / total) ** 2
    return float(np.sqrt(variance)), float(np.std(grey.histogram()))


def _byte_hash(data: bytes) -> int:
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def measure_image(data: bytes, *, phash: bool = True) -> tuple[int, int, tuple]:
    """(hash of the bytes, perceptual hash, raw properties in the order of ``ImageReadout.raw``)
    of one encoded image. Raises OSError or ValueError when it cannot be decoded.

    The reference for :func:`measure_images`, which gives the same numbers for many images at
    a fraction of the cost."""
    import imagehash

    byte_hash = _byte_hash(data)
    with Image.open(io.BytesIO(data)) as opened:
        opened.load()
        grey = opened.mode in _GREY_MODES
        image = opened.convert("L" if grey else "RGB")
    if not grey:
        pixels = np.asarray(image)
        grey = bool((pixels[:, :, 0] == pixels[:, :, 1]).all() and (pixels[:, :, 1] == pixels[:, :, 2]).all())
    low, high = _percentiles(_brightness(image), [5, 99])
    blurriness, histogram_std = _blurriness(image)
    perceptual = 0
    if phash:
        bits = np.packbits(imagehash.phash(image).hash.ravel())
        perceptual = int.from_bytes(bits.tobytes(), "big")
    return byte_hash, perceptual, (image.width, image.height, float(high), float(low), float(image.entropy()),
                                   blurriness, histogram_std, grey)


# ----------------------------------------------------------------------------- batched path

#: Images with more pixels than this go through :func:`measure_image` one by one: decoding
#: dominates their cost, and a batch of them would hold too much memory.
BATCH_MAX_PIXELS = 128 * 128
_GROUP_PIXELS = 1 << 17      # pixels measured at once (128 images of 32×32): bounds the buffers
_PHASH_SIDE = 32             # imagehash.phash: hash_size 8 × highfreq_factor 4, resized LANCZOS
_PHASH_BITS = 8
_RAW_VALUES = len(_RAW) - 1  # every raw property but grayscale, as float64


@functools.lru_cache(maxsize=None)
def _pixel_kernels():
    """The numba-compiled passes over the pixels (compiled on first use and cached on disk:
    in the workspace's folder once :func:`analytics.numba_cache.enable` ran, as in an analysis,
    else numba's own ``__pycache__``; enabling it here would import UMAP, seconds for a check
    that needs none). One loop per image instead of a dozen numpy passes, whose temporaries
    cost more than the arithmetic on small images. Each reproduces PIL's C code operation by
    operation, so the results are the same numbers (no fastmath: no reassociation, no FMA)."""
    return _colour_pass_kernel(), _grey_pass_kernel(), _entropy_kernel()


@functools.lru_cache(maxsize=None)
def _colour_pass_kernel():
    """The RGB pass of :func:`_pixel_kernels`."""
    import numba

    @numba.njit(cache=True, nogil=True)
    def colour_pass(pixels, grey, squares, counts, same):  # pragma: no cover (compiled)
        """RGB images (n, h, w, 3) → PIL's L conversion (Convert.c rgb2l), _brightness's sum of
        squares (its order of operations), PIL's 768-bin histogram, equal channels."""
        n, height, width = pixels.shape[0], pixels.shape[1], pixels.shape[2]
        for i in range(n):
            equal = True
            for y in range(height):
                for x in range(width):
                    r, g, b = pixels[i, y, x, 0], pixels[i, y, x, 1], pixels[i, y, x, 2]
                    counts[i, r] += 1
                    counts[i, 256 + g] += 1
                    counts[i, 512 + b] += 1
                    if r != g or g != b:
                        equal = False
                    grey[i, y, x] = (np.uint32(r) * np.uint32(19595) + np.uint32(g) * np.uint32(38470)
                                     + np.uint32(b) * np.uint32(7471) + np.uint32(0x8000)) >> np.uint32(16)
                    red, green, blue = np.float64(r), np.float64(g), np.float64(b)
                    squares[i, y * width + x] = 0.241 * red * red + 0.691 * green * green + 0.068 * blue * blue
            same[i] = equal

    return colour_pass


@functools.lru_cache(maxsize=None)
def _grey_pass_kernel():
    """The L pass of :func:`_pixel_kernels`."""
    import numba

    @numba.njit(cache=True, nogil=True)
    def grey_pass(grey, counts, edge_sums, edge_squares):  # pragma: no cover (compiled)
        """L images (n, h, w) → 256-bin histogram, and Σv and Σv² over PIL's FIND_EDGES of the
        image: 8·centre − the 8 neighbours, clipped to [0, 255] (float32 sums of integers plus
        0.5, truncated: exact); border pixels copied, an image under 3×3 copied whole
        (Filter.c, ImagingFilter and ImagingFilter3x3)."""
        n, height, width = grey.shape
        interior = height >= 3 and width >= 3
        for i in range(n):
            total = np.int64(0)
            square = np.int64(0)
            for y in range(height):
                for x in range(width):
                    value = np.int64(grey[i, y, x])
                    counts[i, value] += 1
                    if interior and 0 < y < height - 1 and 0 < x < width - 1:
                        box = np.int64(0)
                        for dy in range(-1, 2):
                            for dx in range(-1, 2):
                                box += np.int64(grey[i, y + dy, x + dx])
                        value = min(max(9 * value - box, 0), 255)
                    total += value
                    square += value * value
            edge_sums[i] = total
            edge_squares[i] = square

    return grey_pass


@functools.lru_cache(maxsize=None)
def _entropy_kernel():
    """The entropy loop of :func:`_pixel_kernels`."""
    import numba

    @numba.njit(cache=True, nogil=True)
    def entropy(counts, out):  # pragma: no cover (compiled)
        """PIL's Image.entropy from each row of histogram counts (_imaging.c, _entropy): the
        same sum, bin after bin, with the C library's log."""
        log2e = 1.4426950408889634  # M_LOG2E
        for i in range(counts.shape[0]):
            total = np.float64(counts[i].sum())
            value = 0.0
            for k in range(counts.shape[1]):
                p = np.float64(counts[i, k]) / total
                if p != 0.0:
                    value += p * math.log(p) * log2e
            out[i] = -value

    return entropy


def _lerp_percentiles(order_statistic, size: int, q: list[float]) -> np.ndarray:
    """:func:`_percentiles` for many images at once, from ``order_statistic(ranks)``: the
    transformed order statistics at those 0-based ranks, of shape (n, len(ranks))."""
    positions = np.asarray(q, dtype=np.float64) / 100 * (size - 1)
    low = np.floor(positions).astype(np.int64)
    high = np.minimum(low + 1, size - 1)
    a, b, t = order_statistic(low), order_statistic(high), positions - low
    return np.where(t >= 0.5, b - (b - a) * (1 - t), a + (b - a) * t)


def _grey_statistics(grey: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(256-bin histograms, Σ and Σ² of FIND_EDGES) of L images of shape (n, h, w)."""
    n = len(grey)
    counts, sums, squares = np.zeros((n, 256), np.int64), np.empty(n, np.int64), np.empty(n, np.int64)
    _pixel_kernels()[1](np.ascontiguousarray(grey), counts, sums, squares)
    return counts, sums, squares


def _blur_greys(pixels: np.ndarray, grey: np.ndarray) -> np.ndarray | None:
    """The greyscale images :func:`_blurriness` measures when they differ from ``grey``: above
    64 px a side, the image is first resized (PIL's default filter, one image at a time) and
    then converted to L. None when ``grey`` itself is measured."""
    height, width = pixels.shape[1:3]
    ratio = max(width, height) / _BLUR_MAX_SIDE
    if ratio <= 1:
        return None
    size = (max(int(width // ratio), 1), max(int(height // ratio), 1))
    return np.stack([np.asarray(Image.fromarray(image).resize(size).convert("L")) for image in pixels])


def _phash_bits(grey: np.ndarray) -> np.ndarray:
    """``imagehash.phash`` of each image of ``grey`` (uint8, (n, h, w)) as uint64 (bits row by
    row, first bit highest). The same ``scipy.fftpack`` DCT-II along the same axes, batched (each
    1-D transform is computed alike, so the coefficients and bits equal imagehash's exactly);
    the second transform only over the 8 rows kept."""
    import scipy.fftpack

    n, height, width = grey.shape
    if (height, width) != (_PHASH_SIDE, _PHASH_SIDE):
        side = (_PHASH_SIDE, _PHASH_SIDE)
        grey = np.stack([np.asarray(Image.fromarray(image).resize(side, Image.Resampling.LANCZOS)) for image in grey])
    rows = scipy.fftpack.dct(grey, axis=1)[:, :_PHASH_BITS]
    low = scipy.fftpack.dct(rows, axis=2)[:, :, :_PHASH_BITS].reshape(n, -1)
    bits = low > np.median(low, axis=1, keepdims=True)
    return np.packbits(bits, axis=1).view(">u8").ravel().astype(np.uint64)


def _measure_group(pixels: np.ndarray, phash: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Raw properties of n images of one shape and mode, as :func:`measure_image` computes
    them: ``pixels`` uint8 of shape (n, h, w) (L) or (n, h, w, 3) (RGB) → (values of shape
    (n, 7) in the order of ``ImageReadout.raw`` without grayscale, grayscale flags, perceptual
    hashes (zeros without ``phash``))."""
    colour_pass, _, entropy_of = _pixel_kernels()
    pixels = np.ascontiguousarray(pixels)
    n, height, width = pixels.shape[:3]
    size = height * width
    if pixels.ndim == 4:
        grey, squares = np.empty((n, height, width), np.uint8), np.empty((n, size))
        counts, is_grey = np.zeros((n, 768), np.int64), np.empty(n, bool)
        colour_pass(pixels, grey, squares, counts, is_grey)
        # brightness is non-decreasing in the sum of squares: sort those, take the root of 4
        ordered = np.sort(squares, axis=1)
        low, high = _lerp_percentiles(lambda ranks: np.sqrt(ordered[:, ranks]) / 255, size, [5, 99]).T
        edge_counts = edge_sums = edge_squares = None
    else:
        grey, is_grey = pixels, np.ones(n, bool)
        counts, edge_sums, edge_squares = _grey_statistics(pixels)
        edge_counts = counts
        cumulative = np.cumsum(counts, axis=1)[:, :, None]
        low, high = _lerp_percentiles(lambda ranks: (cumulative <= ranks).sum(axis=1) / 255.0, size, [5, 99]).T
    entropy = np.empty(n)
    entropy_of(counts, entropy)

    small = _blur_greys(pixels, grey)
    if small is not None or edge_counts is None:
        small = grey if small is None else small
        edge_counts, edge_sums, edge_squares = _grey_statistics(small)
    # ImageStat's variance from the edges' histogram, Σcount·v² / N − (Σcount·v / N)²: sums of
    # integers, so the same floats as Σv² and Σv over the pixels
    total = float(edge_counts[0].sum())
    variance = edge_squares / total - (edge_sums / total) ** 2
    values = np.column_stack([np.full(n, float(width)), np.full(n, float(height)), high, low, entropy,
                              np.sqrt(variance), np.std(edge_counts, axis=1)])
    hashes = _phash_bits(grey) if phash else np.zeros(n, np.uint64)
    return values, is_grey, hashes


@dataclass(frozen=True, eq=False)
class _Measured:
    """Row-aligned arrays that a batch fills in (the fields of :class:`ImageReadout`, raw
    split in two); a slice of one covers a chunk of the rows."""

    values: np.ndarray       # (n, 7) float64, NaN until measured
    grayscale: np.ndarray    # (n,) bool
    byte_hashes: np.ndarray  # (n,) uint64
    phashes: np.ndarray      # (n,) uint64
    readable: np.ndarray     # (n,) bool

    @classmethod
    def empty(cls, n: int) -> _Measured:
        return cls(np.full((n, _RAW_VALUES), np.nan), np.zeros(n, bool), np.zeros(n, np.uint64),
                   np.zeros(n, np.uint64), np.zeros(n, bool))

    def rows(self, start: int, stop: int) -> _Measured:
        return _Measured(*(getattr(self, name)[start:stop] for name in
                           ("values", "grayscale", "byte_hashes", "phashes", "readable")))

    def readout(self) -> ImageReadout:
        raw = pd.DataFrame(self.values, columns=list(_RAW[:-1]), copy=False)
        raw["grayscale"] = self.grayscale
        return ImageReadout(raw, self.byte_hashes, self.phashes, self.readable)


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_GREY, _PNG_RGB = 0, 2  # IHDR colour types


def _decode_png(data: bytes) -> np.ndarray | None:
    """An 8-bit grey or RGB PNG of at most :data:`BATCH_MAX_PIXELS` decoded by libpng: the same
    array PIL gives; None for any other file (PIL then decodes it, or says why it cannot)."""
    if _png_decode is None or len(data) < 33 or data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    depth, colour = data[24], data[25]
    if depth != 8 or colour not in (_PNG_GREY, _PNG_RGB) or width * height > BATCH_MAX_PIXELS:
        return None
    try:
        pixels = _png_decode(data)
    except Exception:  # noqa: BLE001 - any refusal: PIL decides, with its own error
        return None
    expected = (height, width) if colour == _PNG_GREY else (height, width, 3)
    # a transparency chunk makes libpng add an alpha channel: PIL keeps RGB, so PIL decodes it
    return pixels if pixels.shape == expected and pixels.dtype == np.uint8 else None


def _decode(data: bytes) -> np.ndarray | None:
    """The pixels :func:`measure_image` measures (L or RGB, converted as it converts), or None
    for an image too large to batch."""
    pixels = _decode_png(data)
    if pixels is not None:
        return pixels
    with Image.open(io.BytesIO(data)) as opened:
        if opened.width * opened.height > BATCH_MAX_PIXELS:
            return None
        opened.load()
        image = opened if opened.mode in ("L", "RGB") else opened.convert("L" if opened.mode in _GREY_MODES else "RGB")
        # np.asarray(image) gives the same array at twice the cost for a small image
        shape = (image.height, image.width) + ((3,) if image.mode == "RGB" else ())
        return np.frombuffer(image.tobytes(), np.uint8).reshape(shape)


def _measure_batch(datas: Sequence[bytes | None], phash: bool, out: _Measured) -> None:
    """Measure ``datas`` into ``out`` (rows aligned, as many)."""
    groups: dict[tuple, list[int]] = defaultdict(list)
    decoded: dict[int, np.ndarray] = {}
    for i, data in enumerate(datas):
        if data is None:
            continue
        try:
            pixels = _decode(data)
            if pixels is None:
                byte_hash, perceptual, raw = measure_image(data, phash=phash)
                out.values[i], out.grayscale[i], out.phashes[i] = raw[:-1], raw[-1], perceptual
            else:
                decoded[i] = pixels
                groups[pixels.shape].append(i)
                byte_hash = _byte_hash(data)
        except (OSError, ValueError, Image.DecompressionBombError):
            continue
        out.byte_hashes[i], out.readable[i] = byte_hash, True
    for shape, members in groups.items():
        step = max(1, _GROUP_PIXELS // (shape[0] * shape[1]))
        for start in range(0, len(members), step):
            rows = members[start:start + step]
            values, is_grey, hashes = _measure_group(np.stack([decoded.pop(i) for i in rows]), phash)
            out.values[rows], out.grayscale[rows], out.phashes[rows] = values, is_grey, hashes


def measure_images(datas: Sequence[bytes | None], *, phash: bool = True) -> ImageReadout:
    """:func:`measure_image` of many encoded images at once (None or undecodable bytes give an
    unreadable row): each is decoded once and the images of one shape and mode are measured
    together. Row i always belongs to ``datas[i]``."""
    out = _Measured.empty(len(datas))
    _measure_batch(datas, phash, out)
    return out.readout()


def _measure_files(paths: Sequence[str], phash: bool, out: _Measured) -> int:
    datas: list[bytes | None] = []
    for path in paths:
        try:
            with open(path, "rb") as handle:
                datas.append(handle.read())
        except OSError:
            datas.append(None)
    _measure_batch(datas, phash, out)
    return len(paths)


def read_images(paths: Sequence[str], *, phash: bool = True, workers: int | None = None,
                chunk: int = 256, progress: Callable[[float, str], None] | None = None) -> ImageReadout:
    """Read every image file once (chunks of ``chunk`` files in ``workers`` threads; PIL decodes
    and the compiled loops compute outside the GIL) and measure it with :func:`measure_images`,
    straight into the result's arrays. Unreadable files (already reported by the loader) get NaN
    properties and ``readable`` False; row i always belongs to ``paths[i]``."""
    progress = progress or (lambda fraction, message: None)
    n = len(paths)
    workers = workers or min(8, os.cpu_count() or 1)
    starts = range(0, n, chunk)
    out = _Measured.empty(n)
    if n:
        _pixel_kernels()  # the dispatchers made once, not by two threads at a time (numba compiles or
        # loads each loop at its first call, under its own lock)
    done = 0
    with ThreadPoolExecutor(max_workers=workers) as pool:
        jobs = pool.map(lambda start: _measure_files(paths[start:start + chunk], phash, out.rows(start, start + chunk)),
                        starts)
        for finished, count in enumerate(jobs, start=1):
            done += count
            progress(finished / len(starts), f"Reading images: {done:,} of {n:,}")
    return out.readout()


def _odd_size(width: np.ndarray, height: np.ndarray) -> tuple[np.ndarray, float]:
    size = np.sqrt(width) * np.sqrt(height)
    known = size[np.isfinite(size)]
    if not len(known):
        return np.full(len(size), np.nan), 0.5
    q1, q3 = np.percentile(known, [25, 75])
    low, high = q1 - _IQR_FACTOR * (q3 - q1), q3 + _IQR_FACTOR * (q3 - q1)
    middle, gap = (low + high) / 2, high - low
    norm, threshold = (gap, 0.5) if gap > 0 else (middle, 1.0)
    return 1 - np.clip(np.abs(size - middle) / norm, 0, 1), threshold


def property_scores(raw: pd.DataFrame, *, thresholds: dict[str, float] | None = None) -> pd.DataFrame:
    """CleanVision scores and flags from :attr:`ImageReadout.raw`: columns ``<property>_score``
    (float, lower = more of an issue, NaN where unreadable) and ``is_<property>`` (bool) for
    every property in :data:`~analytics.data_issues.registry.IMAGE_PROPERTIES`."""
    thresholds = {**THRESHOLDS, **(thresholds or {})}
    width, height = raw["width"].to_numpy(float), raw["height"].to_numpy(float)
    readable = np.isfinite(width)
    blur = 1 - np.exp(-raw["blurriness"].to_numpy(float) * _BLUR_NORMALISER)
    colour = 1 - np.exp(-raw["blurriness_grayscale_std"].to_numpy(float) * _BLUR_NORMALISER)
    colour[colour <= _BLUR_COLOUR_THRESHOLD] = 0
    odd_size, size_threshold = _odd_size(width, height)
    scores = {
        "dark": raw["brightness_perc_99"].to_numpy(float),
        "light": 1 - raw["brightness_perc_5"].to_numpy(float),
        "blurry": np.minimum(blur + colour, 1),
        "low_information": np.minimum(_ENTROPY_NORMALISER * raw["entropy"].to_numpy(float), 1),
        "odd_size": odd_size,
        "odd_aspect_ratio": np.minimum(width / height, height / width),
        "grayscale": np.where(readable, np.where(raw["grayscale"].to_numpy(bool), 0.0, 1.0), np.nan),
    }
    limits = {**thresholds, "odd_size": thresholds.get("odd_size", size_threshold), "grayscale": 1.0}
    columns = {}
    for name in IMAGE_PROPERTIES:
        score = scores[name]
        columns[f"{name}_score"] = score
        with np.errstate(invalid="ignore"):
            columns[f"is_{name}"] = readable & (score < limits[name])
    return pd.DataFrame(columns)
