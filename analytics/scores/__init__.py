"""Per-example scores. Importing this package registers every score family."""

from analytics.scores import label_quality, neighbourhood, training_dynamics  # noqa: F401  (registers)
from analytics.scores.registry import SCORES, Score, ScoreInputs, available_scores, compute_scores
from analytics.scores.regions import REGIONS, RegionThresholds, assign_regions

__all__ = ["SCORES", "Score", "ScoreInputs", "available_scores", "compute_scores", "REGIONS",
           "RegionThresholds", "assign_regions"]
