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
"""

from __future__ import annotations

import hashlib
import io
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import pandas as pd
from PIL import Image, ImageFilter

from analytics.data_issues.registry import IMAGE_PROPERTIES

__all__ = ["ImageReadout", "THRESHOLDS", "read_images", "property_scores", "measure_image"]

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


def measure_image(data: bytes, *, phash: bool = True) -> tuple[int, int, tuple]:
    """(hash of the bytes, perceptual hash, raw properties in the order of ``ImageReadout.raw``)
    of one encoded image. Raises OSError or ValueError when it cannot be decoded."""
    import imagehash

    byte_hash = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")
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


def _measure_files(paths: Sequence[str], phash: bool) -> list:
    results = []
    for path in paths:
        try:
            with open(path, "rb") as handle:
                results.append(measure_image(handle.read(), phash=phash))
        except (OSError, ValueError, Image.DecompressionBombError):
            results.append(None)
    return results


def read_images(paths: Sequence[str], *, phash: bool = True, workers: int | None = None,
                chunk: int = 256, progress: Callable[[float, str], None] | None = None) -> ImageReadout:
    """Read every image file once (in ``workers`` threads; PIL decodes outside the GIL) and
    measure it. Unreadable files (already reported by the loader) get NaN properties and
    ``readable`` False; row i always belongs to ``paths[i]``."""
    progress = progress or (lambda fraction, message: None)
    n = len(paths)
    workers = workers or min(8, os.cpu_count() or 1)
    chunks = [list(paths[start:start + chunk]) for start in range(0, n, chunk)]
    results: list = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done, part in enumerate(pool.map(_measure_files, chunks, [phash] * len(chunks))):
            results.extend(part)
            progress((done + 1) / max(len(chunks), 1), f"Reading images: {len(results):,} of {n:,}")
    readable = np.array([r is not None for r in results], bool)
    empty = (0, 0, (np.nan,) * 7 + (False,))
    byte_hashes = np.array([(r or empty)[0] for r in results], np.uint64)
    phashes = np.array([(r or empty)[1] for r in results], np.uint64)
    raw = pd.DataFrame([(r or empty)[2] for r in results], columns=list(_RAW))
    raw["grayscale"] = raw["grayscale"].astype(bool)
    return ImageReadout(raw, byte_hashes, phashes, readable)


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
