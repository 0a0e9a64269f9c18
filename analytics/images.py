"""Reading image files into arrays for embedding and inference."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

__all__ = ["load_image_batch"]


def load_image_batch(paths: Sequence[str | Path], *, size: int = 32) -> np.ndarray:
    """Load images as RGB, resized to ``size``×``size``.

    Returns
    -------
    ndarray of shape (len(paths), size, size, 3), dtype uint8
        Unreadable files (already reported by the loader) come back as black images, so row
        ``i`` always belongs to ``paths[i]``.
    """
    batch = np.zeros((len(paths), size, size, 3), dtype=np.uint8)
    for i, path in enumerate(paths):
        try:
            with Image.open(path) as image:
                batch[i] = np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))
        except (OSError, ValueError):
            continue
    return batch
