"""Where inference runs: CUDA when present, the CPU otherwise."""

from __future__ import annotations

import torch

__all__ = ["default_device"]


def default_device(prefer: str | None = None) -> torch.device:
    """``prefer`` ("cpu", "cuda", "cuda:1") if given, else CUDA when available, else the CPU."""
    if prefer:
        return torch.device(prefer)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
