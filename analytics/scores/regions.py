"""Data-map regions (Swayamdipta et al. 2020), from explicit, movable thresholds.

The paper draws the regions without fixing thresholds; ours are explicit:
- ambiguous:      variability ≥ variability_threshold
- easy-to-learn:  variability < variability_threshold and confidence ≥ confidence_threshold
- hard-to-learn:  variability < variability_threshold and confidence < confidence_threshold
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analytics.names import REGIONS

__all__ = ["RegionThresholds", "REGIONS", "assign_regions"]


@dataclass(frozen=True)
class RegionThresholds:
    confidence: float = 0.5
    variability: float = 0.2


def assign_regions(confidence: np.ndarray, variability: np.ndarray,
                   thresholds: RegionThresholds = RegionThresholds()) -> np.ndarray:
    """ndarray of shape (n,), dtype object: the region of each example."""
    ambiguous = variability >= thresholds.variability
    easy = ~ambiguous & (confidence >= thresholds.confidence)
    return np.where(ambiguous, REGIONS[1], np.where(easy, REGIONS[0], REGIONS[2])).astype(object)
