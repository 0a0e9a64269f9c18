"""Per-example scores. Importing this package registers every score family."""

from analytics.scores import label_quality, neighbourhood, training_dynamics  # noqa: F401  (registers)
from analytics.scores.registry import (
    HARDER,
    HIGHER,
    LOWER,
    NEITHER,
    SCORES,
    Score,
    ScoreInputs,
    UnknownScoreError,
    available_scores,
    compute_scores,
    harder_is_higher,
    numeric_score_columns,
    score_columns,
)
from analytics.scores.regions import REGIONS, RegionThresholds, assign_regions

__all__ = ["SCORES", "Score", "ScoreInputs", "available_scores", "compute_scores", "REGIONS",
           "RegionThresholds", "assign_regions", "HARDER", "HIGHER", "LOWER", "NEITHER", "UnknownScoreError",
           "harder_is_higher", "numeric_score_columns", "score_columns"]
