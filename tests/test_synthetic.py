import os
import random

import numpy as np
from PIL import Image

from deformgan import pose as P
from deformgan.data import market as M
from deformgan.data import synthetic as S


def test_deterministic_for_a_seed(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    S.make_dataset(str(a), ids=4, images_per_id=3, seed=5, progress=False)
    S.make_dataset(str(b), ids=4, images_per_id=3, seed=5, progress=False)
    for f in ("annotations-train.csv", "annotations-test.csv", "pairs-train.csv", "pairs-test.csv"):
        assert (a / f).read_bytes() == (b / f).read_bytes()
    names = sorted(os.listdir(a / "bounding_box_train"))
    assert names == sorted(os.listdir(b / "bounding_box_train")) and len(names) == 9
    for n in names:
        assert np.array_equal(np.asarray(Image.open(a / "bounding_box_train" / n)),
                              np.asarray(Image.open(b / "bounding_box_train" / n)))
    c = tmp_path / "c"
    S.make_dataset(str(c), ids=4, images_per_id=3, seed=6, progress=False)
    assert (a / "annotations-train.csv").read_bytes() != (c / "annotations-train.csv").read_bytes()


def test_market_layout_and_held_out_identities(tmp_path):
    S.make_dataset(str(tmp_path), ids=10, images_per_id=4, seed=0, progress=False)
    train = M.read_annotations(str(tmp_path / "annotations-train.csv"))
    test = M.read_annotations(str(tmp_path / "annotations-test.csv"))
    assert len(train) == 32 and len(test) == 8
    assert not {M.person_id(n) for n in train} & {M.person_id(n) for n in test}
    for n in train:
        assert os.path.exists(tmp_path / "bounding_box_train" / n)
        pid, cam, frame, _ = n[:-4].split("_")
        assert len(pid) == 4 and cam.startswith("c") and len(frame) == 6
    pairs = M.read_pairs(str(tmp_path / "pairs-train.csv"), train)
    assert len(pairs) == 8 * 4 * 3


def test_drawn_limbs_sit_on_their_keypoints():
    """Draw a person with known colours on a known background: the pixels on the
    middle of each thigh, forearm-free upper arm and the torso centre carry the
    identity's colours, and pixels far from the body keep the background."""
    rng = random.Random(0)
    bank = S.load_pose_bank()
    for k in range(5):
        kp = S.jitter_pose(bank[k * 37], rng)
        ident = S.random_identity(rng)
        ident.pattern, ident.bag, ident.shorts = "plain", None, False
        ident.trousers, ident.shirt = (250, 10, 10), (10, 250, 10)
        canvas = Image.new("RGB", (S.WIDTH * S.SUPERSAMPLE, S.HEIGHT * S.SUPERSAMPLE), (0, 0, 250))
        S.draw_person(canvas, kp, ident, rng)
        im = np.asarray(canvas.resize((S.WIDTH, S.HEIGHT), Image.BOX)).astype(int)

        def at(p):
            x, y = int(round(float(p[0]))), int(round(float(p[1])))
            return im[y, x]

        for hip, knee in (("r_hip", "r_knee"), ("l_hip", "l_knee")):
            mid = (kp[P.J[hip]] + kp[P.J[knee]]) / 2
            r, g, b = at(mid)
            assert r > 150 and b < 100, (k, hip, (r, g, b))
        torso = kp[list(P.TORSO_JOINTS)].mean(0)
        r, g, b = at(torso)
        assert g > 150 and b < 100, (k, "torso", (r, g, b))
        ok = P.present(kp)
        xs, ys = kp[ok, 0], kp[ok, 1]
        far = [(0, 0), (S.WIDTH - 1, 0)]
        for x, y in far:
            if (xs - x).abs().min() > 15 and (ys - y).abs().min() > 15:
                assert tuple(im[y, x]) == (0, 0, 250)


def test_pose_bank_is_real_market_poses():
    bank = S.load_pose_bank()
    assert bank.shape[1:] == (18, 2) and len(bank) >= 100
    assert P.present(bank[:, :14]).all()
    assert bank[..., 0].max() < 64 and bank[..., 1].max() < 128
