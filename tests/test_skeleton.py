"""deformgan_ops.skeleton against the method as the documentation states it (the tables
of ``docs/method.md``, parsed) and against the joints' names: the flip, the limbs'
joints and mirrors worked out from the names, not read from the module."""
import math
import os
import re

import pytest
import torch

from deformgan_ops import skeleton as S

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
METHOD = os.path.join(ROOT, "docs", "method.md")


def _method():
    with open(METHOD, encoding="utf-8") as fh:
        return fh.read()


def _snake(words: str) -> str:
    """'R sho' / 'R shoulder' -> 'r_shoulder', 'L upper leg' -> 'l_upper_leg'."""
    return "_".join({"sho": "shoulder"}.get(w, w) for w in words.strip().lower().split())


def test_joint_order_is_the_documented_table():
    text = _method()
    table = text[text.index("## Keypoints"):text.index("- Files write a missing joint")]
    joints = {}
    for idx, name in re.findall(r"\|\s*(\d+)\s*\|\s*([A-Za-z ]+?)\s*(?=\|)", table):
        joints[int(idx)] = _snake(name)
    assert len(joints) == 18
    assert S.JOINTS == tuple(joints[i] for i in range(18))
    assert S.NUM_JOINTS == 18 and S.J == {n: i for i, n in enumerate(joints[i] for i in range(18))}


def test_limb_parts_are_the_documented_table():
    text = _method()
    table = text[text.index("## Body parts"):text.index("- The limb rectangle of a segment")]
    rows = re.findall(r"^\|\s*(\d)\s*\|\s*([^|]+?)\s*\|\s*([^|]+?)\s*\|\s*([^|]+?)\s*\|$", table, re.M)
    assert [int(r[0]) for r in rows] == list(range(10))
    assert S.PARTS == tuple(_snake(r[1]) for r in rows) and S.NUM_PARTS == 10
    incs = {}
    for p, _, joints, mask in rows:
        p = int(p)
        if p < 2:
            continue
        a, b = (_snake(w) for w in joints.split("->"))
        if mask.startswith("as "):
            incs[p] = incs[int(mask.split()[1])]
        else:
            nums = [float(x) for x in re.findall(r"extension (\d\.\d)", mask) + re.findall(r"(\d\.\d) for the mask", mask)]
            incs[p] = (nums[0], nums[-1])
        joint_a, joint_b, inc_fit, inc_mask, _ = S.LIMB_PARTS[p]
        assert (S.JOINTS[joint_a], S.JOINTS[joint_b]) == (a, b), p
        assert (inc_fit, inc_mask) == incs[p], p
    assert sorted(S.LIMB_PARTS) == list(range(2, 10))


def test_pose_mask_limbs_are_the_documented_list():
    text = _method()
    text = text[text.index("quadrilaterals 4 px half"):text.index("and disks of radius")]
    pairs = [(int(a) - 1, int(b) - 1) for a, b in re.findall(r"\[(\d+),(\d+)\]", text)]
    assert len(pairs) == 23 and S.LIMBS == tuple(pairs)


def _mirror_name(name: str) -> str:
    return {"r_": "l_", "l_": "r_"}.get(name[:2], "") + name[2:] if name[:2] in ("r_", "l_") else name


def test_flip_permutation_swaps_every_left_right_name():
    perm = S.FLIP_PERMUTATION
    assert sorted(perm) == list(range(18))
    for i, name in enumerate(S.JOINTS):
        assert S.JOINTS[perm[i]] == _mirror_name(name)
    assert (perm[14], perm[16]) == (15, 17)  # the method's "including 14<->15 and 16<->17"


def test_joint_groups_and_mirror_parts_from_the_names():
    names = lambda idx: {S.JOINTS[i] for i in idx}  # noqa: E731
    assert names(S.TORSO_JOINTS) == {"r_hip", "l_hip", "l_shoulder", "r_shoulder"} and len(S.TORSO_JOINTS) == 4
    assert S.TORSO_JOINTS == (8, 11, 5, 2)  # the method's order: R hip, L hip, L sho, R sho
    assert names(S.HEAD_JOINTS) == {"nose", "r_eye", "l_eye", "r_ear", "l_ear"} and S.HEAD_JOINTS == (0, 14, 15, 16, 17)
    assert S.GLOBAL_JOINTS == S.TORSO_JOINTS + (S.J["r_knee"], S.J["l_knee"])
    segment = {"upper_leg": ("hip", "knee"), "lower_leg": ("knee", "ankle"), "upper_arm": ("shoulder", "elbow"),
               "lower_arm": ("elbow", "wrist")}
    for p, (a, b, inc_fit, inc_mask, mirror) in S.LIMB_PARTS.items():
        side, seg = S.PARTS[p][:2], S.PARTS[p][2:]
        assert (S.JOINTS[a], S.JOINTS[b]) == tuple(side + j for j in segment[seg])
        assert S.PARTS[mirror] == _mirror_name(S.PARTS[p])
        assert (inc_fit, inc_mask) == ((0.1, 0.1) if seg.startswith("upper") else (0.3, 0.5))


def test_missing_and_present_at_their_edges():
    kp = torch.tensor([[0.0, 0.0], [-0.0, 3.0], [-1e-6, 3.0], [3.0, -1.0], [math.nan, 2.0], [2.0, math.inf],
                       [-math.inf, 1.0], [5e6, 1e-30]])
    want = [False, False, True, True, True, True, True, False]
    assert S.missing(kp).tolist() == want and S.present(kp).tolist() == [not w for w in want]
    assert S.missing(kp.reshape(2, 4, 2)).shape == (2, 4)
    assert S.missing(torch.empty(0, 2)).shape == (0,)


def test_check_keypoints_messages():
    S.check_keypoints(torch.zeros(18, 2))
    S.check_keypoints(torch.zeros(3, 5, 18, 2, dtype=torch.float16), "poses")
    for bad, shape in ((torch.zeros(18, 3), "[18, 3]"), (torch.zeros(2), "[2]"), (torch.zeros(17, 2), "[17, 2]"),
                       ([[0.0, 0.0]] * 18, "list"), (torch.zeros(2, 18), "[2, 18]")):
        with pytest.raises(ValueError) as err:
            S.check_keypoints(bad, "source_keypoints")
        assert str(err.value) == f"source_keypoints must have shape [..., 18, 2] (x, y), got {shape}"
    with pytest.raises(ValueError, match=r"^keypoints must"):
        S.check_keypoints(torch.zeros(1))
    with pytest.raises(TypeError) as err:
        S.check_keypoints(torch.zeros(18, 2, dtype=torch.int32), "poses")
    assert str(err.value) == "poses must be a floating point tensor, got torch.int32"


def test_pose_batch():
    x = torch.arange(2 * 3 * 36, dtype=torch.float16).reshape(2, 3, 18, 2).requires_grad_()
    b = S.pose_batch(x)
    assert b.shape == (6, 18, 2) and b.dtype == torch.float32 and not b.requires_grad
    assert torch.equal(b, x.detach().float().reshape(6, 18, 2))
    d = torch.rand(18, 2, dtype=torch.float64, requires_grad=True)
    out = S.pose_batch(d)
    assert out.dtype == torch.float64 and out.shape == (1, 18, 2) and not out.requires_grad
    assert out.data_ptr() == d.data_ptr()  # float32/float64 are not copied
    assert S.pose_batch(torch.zeros(18, 2, dtype=torch.bfloat16)).dtype == torch.float32


def test_example_poses_are_what_their_docstring_says():
    poses = S.example_poses()
    assert poses.shape == (4, 18, 2) and poses.dtype == torch.float64
    assert torch.equal(poses, S.example_poses())  # seeded
    inside = lambda p: (p[:, 0] >= 0) & (p[:, 0] < 64) & (p[:, 1] >= 0) & (p[:, 1] < 128)  # noqa: E731
    assert bool(inside(poses[0]).all())  # a whole one, inside a 128x64 image
    assert S.missing(poses[1]).nonzero().flatten().tolist() == [0, 3, 4, 12, 13, 14, 15, 16, 17]
    assert poses[2, S.J["l_wrist"]].tolist() == [70.0, 60.0] and int((~inside(poses[2])).sum()) == 1
    assert S.missing(poses[3]).nonzero().flatten().tolist() == [8, 11]
    # near a drawn upright person: the noise is a few pixels around the base pose
    base = poses[0]
    assert base[S.J["neck"], 1] < base[S.J["r_hip"], 1] < base[S.J["r_knee"], 1] < base[S.J["r_ankle"], 1]
    assert float((poses[0] - poses[3]).abs()[S.present(poses[3])].max()) < 20
    assert 0.5 < float((poses[0] - poses[3]).abs()[S.present(poses[3])].mean()) < 6
