"""Small previews of examples: image thumbnails as data URIs (nothing leaves the server)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from PIL import Image

__all__ = ["image_thumbnail_uri"]


def image_thumbnail_uri(path: str | Path, *, size: int = 64) -> str | None:
    """A PNG data URI of the image scaled to fit ``size``×``size``; None if it cannot be read.

    Tiny images (such as 8×8 digits) are scaled up without smoothing so their pixels stay
    visible; larger ones are scaled down with antialiasing.
    """
    try:
        with Image.open(path) as image:
            image = image.convert("RGBA" if image.mode in ("RGBA", "LA", "P") else "RGB")
            scale = size / max(image.size)
            resample = Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS
            new_size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            image = image.resize(new_size, resample)
            buffer = io.BytesIO()
            image.save(buffer, format="PNG")
    except (OSError, ValueError):
        return None
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
