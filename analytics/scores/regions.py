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

__all__ = ["RegionThresholds", "REGIONS", "assign_regions", "region_codes"]


@dataclass(frozen=True)
class RegionThresholds:
    confidence: float = 0.5
    variability: float = 0.2


def region_codes(confidence: np.ndarray, variability: np.ndarray,
                 thresholds: RegionThresholds = RegionThresholds()) -> np.ndarray:
    """ndarray of shape (n,), int8: each example's region as its position in ``REGIONS``
    (1 MB at a million examples, where the names take an object each)."""
    ambiguous = np.asarray(variability) >= thresholds.variability
    easy = ~ambiguous & (np.asarray(confidence) >= thresholds.confidence)
    return np.where(ambiguous, REGIONS.index("ambiguous"),
                    np.where(easy, REGIONS.index("easy-to-learn"), REGIONS.index("hard-to-learn"))).astype(np.int8)


def assign_regions(confidence: np.ndarray, variability: np.ndarray,
                   thresholds: RegionThresholds = RegionThresholds()) -> np.ndarray:
    """ndarray of shape (n,), dtype object: the region of each example."""
    return np.asarray(REGIONS, dtype=object)[region_codes(confidence, variability, thresholds)]
