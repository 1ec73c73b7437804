"""Training plans of speciesvi."""

from ._checkpoint import ResumableCheckpoint
from ._trainingplan import ALIGNMENT_KEY, AlignmentTrainingPlan, SpeciesTrainingPlan, linear_warmup

__all__ = ["ALIGNMENT_KEY", "AlignmentTrainingPlan", "ResumableCheckpoint", "SpeciesTrainingPlan", "linear_warmup"]
