"""The skeleton (docs/method.md: keypoints, body parts): the 18 joints, the ten body parts, the limb
rectangles' joints, and when a joint counts as missing. The one place these tables
live: the reference, the input validation, the kernels' Python side and
:mod:`deformgan.pose` import them from here (the C++ math header
``csrc/ops/pose_geometry_math.h`` holds the same tables for the kernels, and
``tests/test_pose_geometry.py`` checks them against these).

Conventions: keypoints are float tensors ``[..., 18, 2]`` holding (x, y) = (column,
row) in pixels of the image; a joint is missing when either coordinate is negative or
not finite (the files write -1).
"""
import torch

JOINTS = ("nose", "neck", "r_shoulder", "r_elbow", "r_wrist", "l_shoulder", "l_elbow", "l_wrist",
          "r_hip", "r_knee", "r_ankle", "l_hip", "l_knee", "l_ankle", "r_eye", "l_eye", "r_ear", "l_ear")
NUM_JOINTS = len(JOINTS)
J = {name: i for i, name in enumerate(JOINTS)}

TORSO_JOINTS = (J["r_hip"], J["l_hip"], J["l_shoulder"], J["r_shoulder"])
HEAD_JOINTS = (J["nose"], J["r_eye"], J["l_eye"], J["r_ear"], J["l_ear"])
# The joints of the ``global`` warp's single affine: the torso and both knees.
GLOBAL_JOINTS = TORSO_JOINTS + (J["r_knee"], J["l_knee"])

PARTS = ("torso", "head", "r_upper_leg", "l_upper_leg", "r_lower_leg", "l_lower_leg",
         "r_upper_arm", "l_upper_arm", "r_lower_arm", "l_lower_arm")
NUM_PARTS = len(PARTS)
# limb part -> (joint a, joint b, inc for the fit, inc for the mask, mirror part)
LIMB_PARTS = {
    2: (J["r_hip"], J["r_knee"], 0.1, 0.1, 3),
    3: (J["l_hip"], J["l_knee"], 0.1, 0.1, 2),
    4: (J["r_knee"], J["r_ankle"], 0.3, 0.5, 5),
    5: (J["l_knee"], J["l_ankle"], 0.3, 0.5, 4),
    6: (J["r_shoulder"], J["r_elbow"], 0.1, 0.1, 7),
    7: (J["l_shoulder"], J["l_elbow"], 0.1, 0.1, 6),
    8: (J["r_elbow"], J["r_wrist"], 0.3, 0.5, 9),
    9: (J["l_elbow"], J["l_wrist"], 0.3, 0.5, 8),
}

# Horizontal flip: every L/R pair swaps, eyes and ears included.
FLIP_PERMUTATION = (0, 1, 5, 6, 7, 2, 3, 4, 11, 12, 13, 8, 9, 10, 15, 14, 17, 16)

# The limbs drawn as a skeleton (and used by the PG2-style pose mask), 0-based.
LIMBS = tuple((a - 1, b - 1) for a, b in (
    (2, 3), (2, 6), (3, 4), (4, 5), (6, 7), (7, 8), (2, 9), (9, 10), (10, 11), (2, 12), (12, 13),
    (13, 14), (2, 1), (1, 15), (15, 17), (1, 16), (16, 18), (2, 17), (2, 18), (9, 12), (12, 6),
    (9, 3), (17, 18)))


def missing(keypoints: torch.Tensor) -> torch.Tensor:
    """``[..., 2]`` -> ``[...]`` bool: either coordinate negative or not finite."""
    return ~(torch.isfinite(keypoints).all(-1) & (keypoints >= 0).all(-1))


def present(keypoints: torch.Tensor) -> torch.Tensor:
    """``[..., 2]`` -> ``[...]`` bool: the complement of :func:`missing`."""
    return ~missing(keypoints)


def check_keypoints(kp, name: str = "keypoints") -> None:
    """``kp`` must be a floating point tensor ``[..., 18, 2]``; the error names ``name``."""
    if not isinstance(kp, torch.Tensor) or kp.dim() < 2 or tuple(kp.shape[-2:]) != (NUM_JOINTS, 2):
        shape = list(kp.shape) if isinstance(kp, torch.Tensor) else type(kp).__name__
        raise ValueError(f"{name} must have shape [..., {NUM_JOINTS}, 2] (x, y), got {shape}")
    if not kp.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor, got {kp.dtype}")


def pose_batch(keypoints: torch.Tensor) -> torch.Tensor:
    """``[..., 18, 2]`` -> ``[B, 18, 2]`` float32/float64, detached: the input of the
    pose geometry kernels (piecewise constant or not differentiated)."""
    kp = keypoints.detach().reshape(-1, NUM_JOINTS, 2)
    return kp if kp.dtype in (torch.float32, torch.float64) else kp.float()


def example_poses() -> torch.Tensor:
    """Four float64 poses ``[4, 18, 2]`` in a 128x64 image, for tests and examples: a
    whole one, one with missing limbs and head, one with a wrist outside the image,
    and one without hips."""
    g = torch.Generator().manual_seed(0)
    base = torch.tensor([[32, 20], [32, 30], [22, 31], [19, 48], [18, 63], [42, 31], [45, 48], [46, 63],
                         [26, 66], [25, 90], [24, 114], [38, 66], [39, 90], [40, 114], [29, 17], [35, 17],
                         [26, 19], [38, 19]], dtype=torch.float64)
    poses = base + torch.randn(4, NUM_JOINTS, 2, generator=g, dtype=torch.float64) * 2
    poses[1, [3, 4, 12, 13, 0, 14, 15, 16, 17]] = -1
    poses[2, J["l_wrist"]] = torch.tensor([70.0, 60.0], dtype=torch.float64)
    poses[3, [J["r_hip"], J["l_hip"]]] = -1
    return poses
