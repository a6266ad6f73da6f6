"""Market-1501 files, the pose-pair dataset, and the synthetic demo set."""
from .market import (AnnotationError, MarketPoseDataset, is_valid_for_pairs, person_id, read_annotations,
                     read_pairs, standard_pairs, write_annotations, write_pairs)

__all__ = ["AnnotationError", "MarketPoseDataset", "is_valid_for_pairs", "person_id", "read_annotations",
           "read_pairs", "standard_pairs", "write_annotations", "write_pairs"]
