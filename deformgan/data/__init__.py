"""Market-1501 and DeepFashion files, dataset folders, the pose-pair dataset, and the
synthetic demo sets."""
from .market import (AnnotationError, MarketPoseDataset, identity, is_valid_for_pairs, person_id, read_annotations,
                     read_pairs, standard_pairs, write_annotations, write_pairs)

__all__ = ["AnnotationError", "MarketPoseDataset", "identity", "is_valid_for_pairs", "person_id", "read_annotations",
           "read_pairs", "standard_pairs", "write_annotations", "write_pairs"]
