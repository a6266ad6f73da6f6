"""The synthetic demo sets' parts against worked answers and properties: the pose bank
file, identities' colour ranges and frequencies, jittered poses (a similarity of the
bank pose or of its mirror image, rounded, kept in the frame), drawing helpers, the
studio backdrop, the Market and In-shop layouts, names and metadata, and the CLI."""
import collections
import json
import os
import random

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from deformgan import pose as P
from deformgan.data import market as M
from deformgan.data import synthetic as S
from deformgan.data.deepfashion import field_name


def test_load_pose_bank_reads_the_files_poses(tmp_path):
    pose = [[float(j), float(2 * j)] for j in range(17)] + [[-1.0, -1.0]]
    path = tmp_path / "bank.json"
    path.write_text(json.dumps({"source": "test", "poses": [pose, pose[::-1]]}))
    bank = S.load_pose_bank(str(path))
    assert bank.dtype == torch.float32 and bank.shape == (2, 18, 2)
    assert bank[0].tolist() == pose and bank[1].tolist() == pose[::-1]
    shipped = S.load_pose_bank()
    assert shipped.shape == (400, 18, 2) and torch.equal(shipped, S.load_pose_bank(S.BANK_PATH))


def test_identities_span_their_colour_ranges_at_their_frequencies():
    rng = random.Random(0)
    ids = [S.random_identity(rng) for _ in range(6000)]

    def channels(attr):
        return [c for i in ids if getattr(i, attr) is not None for c in getattr(i, attr)]
    for attr, lo, hi in (("shirt", 20, 235), ("shirt2", 20, 235), ("trousers", 10, 200), ("shoes", 0, 80),
                         ("bag", 20, 235)):
        values = channels(attr)
        assert min(values) == lo and max(values) == hi, attr
        assert all(isinstance(c, int) for c in values)
        assert all(isinstance(getattr(i, attr), tuple) and len(getattr(i, attr)) == 3
                   for i in ids if getattr(i, attr) is not None)
    assert {i.skin for i in ids} == set(S.SKIN) and {i.hair for i in ids} == set(S.HAIR)

    def share(pred):
        return sum(map(pred, ids)) / len(ids)
    for pred, want in ((lambda i: i.pattern == "plain", 0.5), (lambda i: i.pattern == "stripes", 0.25),
                       (lambda i: i.pattern == "two-tone", 0.25), (lambda i: i.long_sleeves, 0.5),
                       (lambda i: i.shorts, 0.25), (lambda i: i.long_hair, 0.3), (lambda i: i.bag is not None, 0.3)):
        assert abs(share(pred) - want) < 0.025, want
    assert S.random_identity(random.Random(4)) == S.random_identity(random.Random(4))


def fit_similarity(q, new):
    """Least squares new ~ s * q + t (one scale, no rotation) over present joints:
    (s, t, max residual)."""
    qc, nc = q - q.mean(0), new - new.mean(0)
    s = float((qc * nc).sum() / (qc * qc).sum())
    t = new.mean(0) - s * q.mean(0)
    return s, t, float((s * q + t - new).norm(dim=1).max())


def test_jittered_poses_are_a_rounded_similarity_of_the_pose_or_its_mirror_kept_in_the_frame():
    bank = S.load_pose_bank()
    rng = random.Random(1)
    scales, mirrored, shifts = [], 0, []
    for k in range(1200):
        kp = bank[k % len(bank)]
        new = S.jitter_pose(kp, rng)
        assert new.dtype == kp.dtype and new.shape == (18, 2)
        fits = []
        for flip in (False, True):
            q = P.flip_keypoints(kp, S.WIDTH) if flip else kp
            ok = P.present(new)  # joints pushed past the left or top edge read as missing
            if not bool((P.present(q) | ~ok).all()):
                continue  # not this candidate: a joint it lacks is present
            fits.append((fit_similarity(q[ok], new[ok]), flip, q[ok]))
        (s, t, residual), flip, q = min(fits, key=lambda f: f[0][2])
        assert residual <= 1.0, (k, residual)  # rounding moves a joint by <= 0.71 px (the fit adds a little)
        present = new[P.present(new)]
        assert torch.equal(present, present.round())
        lo_new, hi_new = present.min(0).values, present.max(0).values
        for axis, limit in ((0, S.WIDTH - 3), (1, S.HEIGHT - 3)):
            if hi_new[axis] - lo_new[axis] <= limit - 2:  # it fits: inside
                assert 2 <= lo_new[axis] and hi_new[axis] <= limit, (k, axis)
            else:  # too large after scaling: one edge on the frame's, the other past it
                assert lo_new[axis] == 2 or hi_new[axis] == limit, (k, axis)
        scales.append(s)
        mirrored += flip
        before = (q.min(0).values + q.max(0).values) / 2
        after = (present.min(0).values + present.max(0).values) / 2
        lo = (q.min(0).values - before) * 1.08 + before - torch.tensor([4.0, 3.0])
        hi = (q.max(0).values - before) * 1.08 + before + torch.tensor([4.0, 3.0])
        if bool((lo >= 2).all()) and bool((hi <= torch.tensor([S.WIDTH - 3.0, S.HEIGHT - 3.0])).all()):
            shifts.append((after - before).tolist())  # no clamping: the box centre moved by the shift
    assert 0.89 <= min(scales) < 0.92 and 1.06 < max(scales) <= 1.09
    assert 0.45 < mirrored / 1200 < 0.55
    assert len(shifts) > 50
    dx, dy = [s[0] for s in shifts], [s[1] for s in shifts]
    assert -4.5 <= min(dx) < -3.3 and 3.3 < max(dx) <= 4.5 and -3.5 <= min(dy) < -2.3 and 2.3 < max(dy) <= 3.5


class ScriptedRng:
    """random.Random's random() and uniform() answering from a script."""

    def __init__(self, mirror: bool, scale: float, dx: float, dy: float):
        self.answers = [0.25 if mirror else 0.75, scale, dx, dy]

    def random(self):
        return self.answers.pop(0)

    def uniform(self, lo, hi):
        value = self.answers.pop(0)
        assert lo <= value <= hi, (lo, value, hi)
        return value


def test_jitter_pose_worked_examples():
    """Scale about the box centre, shift, move in from a side that sticks out, round
    (half to even), missing joints -1; the answers worked out by hand."""
    kp = torch.full((18, 2), -1.0)
    kp[P.J["r_shoulder"]] = torch.tensor([20.0, 20.0])
    kp[P.J["l_ankle"]] = torch.tensor([60.0, 100.0])  # box centre (40, 60)

    def jitter(**script):
        out = S.jitter_pose(kp, ScriptedRng(**script))
        assert ((out == -1).all(-1) == P.missing(kp if not script["mirror"] else P.flip_keypoints(kp, 64))).all()
        return out[P.J["r_shoulder"]].tolist(), out[P.J["l_ankle"]].tolist(), out
    # no scaling, half a pixel right: 60.5 is inside (61 is the limit) and rounds to 60
    assert jitter(mirror=False, scale=1.0, dx=0.5, dy=0.0)[:2] == ([20.0, 20.0], [60.0, 100.0])
    # scaled by 0.9 about (40, 60): (22, 24) and (58, 96); shifted (-1, 2)
    assert jitter(mirror=False, scale=0.9, dx=-1.0, dy=2.0)[:2] == ([21.0, 26.0], [57.0, 98.0])
    # scaled by 1.05: (19, 18) and (61, 102); 3 right, x 64 sticks out by 3 -> moved left by 3
    assert jitter(mirror=False, scale=1.05, dx=3.0, dy=0.0)[:2] == ([19.0, 18.0], [61.0, 102.0])
    # scaled by 1.05, 2.5 up: y 15.5 and 99.5 round (half to even) to 16 and 100
    assert jitter(mirror=False, scale=1.05, dx=0.0, dy=-2.5)[:2] == ([19.0, 16.0], [61.0, 100.0])
    # mirrored: the right shoulder becomes the left one at x = 63 - 20 = 43, the left
    # ankle the right one at x = 3; moved 2.5 left, x 0.5 sticks out left -> moved in to 2
    _, _, out = jitter(mirror=True, scale=1.0, dx=-2.5, dy=0.0)
    assert out[P.J["l_shoulder"]].tolist() == [42.0, 20.0] and out[P.J["r_ankle"]].tolist() == [2.0, 100.0]
    assert int(P.present(out).sum()) == 2


def test_jitter_moves_a_pose_that_sticks_out_in_from_that_side():
    """A pose spanning the whole frame, scaled up or shifted, sticks out: it is moved in
    from the side it sticks out of, left or top first (the joint at the other edge can
    then reach past it, or, moved in from the right or bottom, past the left or top edge
    and read as missing: see jitter_pose)."""
    kp = torch.full((18, 2), -1.0)
    kp[P.J["neck"]] = torch.tensor([0.0, 0.0])
    kp[P.J["r_hip"]] = torch.tensor([63.0, 127.0])
    seen = set()
    for seed in range(40):
        new = S.jitter_pose(kp, random.Random(seed))
        ok = P.present(new)
        if int(ok.sum()) == 1:  # the other joint pushed past the left or top edge
            # it keeps the coordinates it was pushed to (negative), not the -1, -1 of an absent joint
            lost = [j for j in (P.J["neck"], P.J["r_hip"], P.J["l_hip"])
                    if P.missing(new[j]) and new[j].tolist() != [-1.0, -1.0]]
            assert len(lost) == 1
            seen.add("lost")
            continue
        assert int(ok.sum()) == 2
        lo, hi = new[ok].min(0).values, new[ok].max(0).values
        for axis, limit in ((0, S.WIDTH - 3), (1, S.HEIGHT - 3)):
            if hi[axis] - lo[axis] <= limit - 2:
                assert 2 <= lo[axis] and hi[axis] <= limit
            else:
                assert lo[axis] == 2 or hi[axis] == limit
            seen |= {(axis, "lo")} if lo[axis] == 2 else {(axis, "hi")} if hi[axis] == limit else set()
    assert seen == {(0, "lo"), (0, "hi"), (1, "lo"), (1, "hi"), "lost"}


def test_pt_and_has():
    kp = torch.full((18, 2), -1.0)
    kp[3] = torch.tensor([4.0, 7.0])
    kp[5] = torch.tensor([0.0, 0.0])
    assert S._pt(kp, 3) == (13.5, 22.5) and S._pt(kp, 5) == (1.5, 1.5)
    assert S._has(kp, 3) and S._has(kp, 3, 5) and not S._has(kp, 3, 4) and not S._has(kp, 4)


def test_limb_is_a_capsule_between_two_present_joints():
    """Joints (2, 3) and (8, 3) are drawn at (7.5, 10.5) and (25.5, 10.5): a line of the
    width asked for (at least 1) with round caps of half that width, so the capsule spans
    x 4.5-28.5, y 7.5-13.5 at width 6 (pixels 4-28, 7-13), and one row of 19 pixels at
    width 0.4."""
    kp = torch.full((18, 2), -1.0)
    kp[0], kp[1] = torch.tensor([2.0, 3.0]), torch.tensor([8.0, 3.0])
    for width, box, count in ((6.0, (4, 28, 7, 13), None), (0.4, (7, 25, 10, 10), 19)):
        im = Image.new("RGB", (40, 20), (0, 0, 0))
        S._limb(ImageDraw.Draw(im), kp, 0, 1, width, (255, 0, 0))
        a = np.asarray(im)
        ys, xs = np.nonzero(a[..., 0])
        assert (xs.min(), xs.max(), ys.min(), ys.max()) == box, width
        assert count is None or len(xs) == count
        assert set(map(tuple, a[ys, xs])) == {(255, 0, 0)}
        if count is None:
            assert a[10, 4:29, 0].all() and a[8:14, 16, 0].all()  # the middle row; the line 6 rows wide
    for gone in (0, 1):  # either joint missing: nothing drawn
        none = Image.new("RGB", (40, 20), (0, 0, 0))
        other = kp.clone()
        other[gone] = -1
        S._limb(ImageDraw.Draw(none), other, 0, 1, 6.0, (255, 0, 0))
        assert not np.asarray(none).any()


def plain_person(kp, rng, **changes):
    ident = S.random_identity(rng)
    ident.pattern, ident.bag, ident.shorts, ident.long_sleeves, ident.long_hair = "plain", None, False, True, False
    ident.trousers, ident.shirt, ident.shirt2 = (250, 10, 10), (10, 250, 10), (250, 250, 10)
    ident.skin, ident.hair, ident.shoes = (250, 10, 250), (10, 250, 250), (120, 120, 120)
    for k, v in changes.items():
        setattr(ident, k, v)
    canvas = Image.new("RGB", (S.WIDTH * S.SUPERSAMPLE, S.HEIGHT * S.SUPERSAMPLE), (0, 0, 250))
    S.draw_person(canvas, kp, ident, rng)
    return np.asarray(canvas.resize((S.WIDTH, S.HEIGHT), Image.BOX)).astype(int)


def colour_at(im, p):
    return tuple(im[int(round(float(p[1]))), int(round(float(p[0])))])


def near(c, want, tol=60):
    return all(abs(a - b) <= tol for a, b in zip(c, want))


def test_draw_person_puts_each_garment_on_its_joints():
    """Colours chosen so that every garment is told apart: trousers red, shirt green,
    second shirt colour yellow, skin magenta, hair cyan, shoes grey, background blue."""
    bank = S.load_pose_bank()
    rng = random.Random(2)
    J = P.J
    bags_seen = 0
    for k in range(6):
        kp = S.jitter_pose(bank[k * 53], rng)

        def mid(a, b):
            return (kp[J[a]] + kp[J[b]]) / 2
        im = plain_person(kp, rng)
        for side in ("r", "l"):
            assert near(colour_at(im, mid(f"{side}_hip", f"{side}_knee")), (250, 10, 10)), (k, side, "thigh")
            assert near(colour_at(im, mid(f"{side}_knee", f"{side}_ankle")), (250, 10, 10)), (k, side, "shin")
            assert near(colour_at(im, mid(f"{side}_elbow", f"{side}_wrist")), (10, 250, 10)), (k, side, "sleeve")
        # the left leg is drawn last: its shoe is never covered (the right one can be)
        assert near(colour_at(im, kp[J["l_ankle"]]), (120, 120, 120)), (k, "shoe")
        torso = kp[list(P.TORSO_JOINTS)].mean(0)
        assert near(colour_at(im, torso), (10, 250, 10)), (k, "torso")
        head = kp[[j for j in P.HEAD_JOINTS if P.present(kp[j:j + 1]).all()]].mean(0)
        assert near(colour_at(im, head + torch.tensor([0.0, 1.0])), (250, 10, 250)), (k, "face")
        st = float(P.torso_size(kp))
        if head[1] >= 0.24 * st:  # the hair above the face, where the head is not at the top edge
            assert near(colour_at(im, head - torch.tensor([0.0, 0.24 * st])), (10, 250, 250)), (k, "hair")
        short = plain_person(kp, random.Random(0), shorts=True, long_sleeves=False)
        for side in ("r", "l"):
            assert near(colour_at(short, mid(f"{side}_knee", f"{side}_ankle")), (250, 10, 250)), (k, "bare shin")
            assert near(colour_at(short, mid(f"{side}_hip", f"{side}_knee")), (250, 10, 10)), (k, "shorts")
            assert near(colour_at(short, mid(f"{side}_elbow", f"{side}_wrist")), (250, 10, 250)), (k, "bare arm")
            assert near(colour_at(short, mid(f"{side}_shoulder", f"{side}_elbow")), (10, 250, 10)), (k, "sleeve")
        two = plain_person(kp, random.Random(0), pattern="two-tone")
        top = (kp[J["r_shoulder"]] + kp[J["l_shoulder"]]) / 2 * 0.75 + (kp[J["r_hip"]] + kp[J["l_hip"]]) / 2 * 0.25
        low = (kp[J["r_shoulder"]] + kp[J["l_shoulder"]]) / 2 * 0.25 + (kp[J["r_hip"]] + kp[J["l_hip"]]) / 2 * 0.75
        assert near(colour_at(two, top), (10, 250, 10)) and near(colour_at(two, low), (250, 250, 10)), k
        striped = plain_person(kp, random.Random(0), pattern="stripes")
        x = int(round(float(torso[0])))
        y0 = int(round(float(kp[[J["r_shoulder"], J["l_shoulder"]], 1].max()))) + 1
        y1 = int(round(float(kp[[J["r_hip"], J["l_hip"]], 1].min()))) - 1
        column = [tuple(c) for c in striped[y0:y1, x]]
        assert any(near(c, (250, 250, 10), 40) for c in column) and any(near(c, (10, 250, 10), 40) for c in column)
        bag = plain_person(kp, random.Random(0), bag=(255, 255, 255))
        ys, xs = np.nonzero((bag == 255).all(-1))  # behind the body: partly or wholly hidden
        hx, hy = float(kp[J["r_hip"], 0]) + 0.5, float(kp[J["r_hip"], 1]) + 0.5
        assert (xs >= hx - 0.35 * st - 1).all() and (xs <= hx + 0.1 * st + 1).all(), (k, "bag")
        assert (ys >= hy - 0.45 * st - 1).all() and (ys <= hy + 0.05 * st + 1).all(), (k, "bag")
        bags_seen += len(xs) > 0
        assert not (im == 255).all(-1).any()
    assert bags_seen >= 3


class FigureOracle:
    """draw_person's figure (its docstring) rasterised independently: each shape an
    analytic inside test at the pixel centres (PIL's pixel (i, j) sits at (i, j)),
    painted in drawing order. Pixels within ``band`` of a shape's edge are "unsure"
    (rounding of the rasteriser) unless a later shape covers them wholly."""

    def __init__(self, size, band=1.5):
        h, w = size
        self.y, self.x = np.mgrid[0:h, 0:w].astype(float)
        self.colour = np.zeros((h, w, 3), int)
        self.unsure = np.zeros((h, w), bool)
        self.band = band

    def paint(self, inside, colour, band=None):
        """inside(grow) -> bool map of the shape grown by ``grow`` (negative: shrunk);
        ``band``: (grown, shrunk) for this shape when not the default."""
        grow, shrink = (self.band, self.band) if band is None else band
        outer, inner = inside(grow), inside(-shrink)
        self.colour[inner] = colour
        self.unsure[inner] = False
        self.unsure[outer & ~inner] = True

    def segment(self, a, b, half, caps, grow):
        ax, ay = a
        bx, by = b
        dx, dy = bx - ax, by - ay
        length = np.hypot(dx, dy)
        ux, uy = (dx / length, dy / length) if length > 0 else (1.0, 0.0)
        along = (self.x - ax) * ux + (self.y - ay) * uy
        across = np.abs(-(self.x - ax) * uy + (self.y - ay) * ux)
        body = (across <= half + grow) & (along >= -grow) & (along <= length + grow)
        if caps is None:
            return body
        ends = [np.hypot(self.x - px, self.y - py) <= caps + grow for px, py in (a, b)]
        return body | ends[0] | ends[1]

    def limb(self, a, b, width, colour):
        # PIL's line is int(width) wide; the caps are discs of radius width / 2
        self.paint(lambda g: self.segment(a, b, max(1, int(width)) / 2, width / 2, g), colour)

    def ellipse(self, box, colour):
        # PIL fills the ellipse inscribed in the whole pixels from int(x0) to int(x1)
        x0, y0, x1, y1 = (float(int(v)) for v in box)
        cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0 + 1) / 2, (y1 - y0 + 1) / 2
        self.paint(lambda g: ((self.x - cx) / max(rx + g, 1e-9)) ** 2 + ((self.y - cy) / max(ry + g, 1e-9)) ** 2 <= 1,
                   colour)

    def box_inside(self, box, radius, g):
        x0, y0, x1, y1 = box
        inside = (self.x >= x0 - g) & (self.x <= x1 + g) & (self.y >= y0 - g) & (self.y <= y1 + g)
        if radius:
            r = min(radius, (x1 - x0) / 2, (y1 - y0) / 2)
            # the corner regions: outside the disc of radius r about each corner's centre
            qx = np.clip(self.x, x0 + r, x1 - r)
            qy = np.clip(self.y, y0 + r, y1 - r)
            inside &= np.hypot(self.x - qx, self.y - qy) <= r + g
        return inside

    def quad_inside(self, quad, g):
        """PIL's polygon (measured): its corners cut to whole pixels (``int``, toward
        zero), then in each row j the pixels from round(left edge) to round(right
        edge): the pixels (i, j) at most 0.5 px outside the cut quad (see TIGHT)."""
        x, y = self.x, self.y
        quad = [(float(int(px)), float(int(py))) for px, py in quad]
        inside = np.ones_like(self.x, bool)
        sign = np.sign(sum(quad[i - 1][0] * quad[i][1] - quad[i][0] * quad[i - 1][1] for i in range(4)))  # the winding
        for i in range(4):
            (ax, ay), (bx, by) = quad[i - 1], quad[i]
            n = np.hypot(bx - ax, by - ay)
            # signed distance to the edge, positive inside for either winding
            inside &= sign * ((bx - ax) * (y - ay) - (by - ay) * (x - ax)) / n >= -g
        return inside


# polygons and the stripes' boxes: exact up to the rounding of each row's ends (quad_inside)
TIGHT = (0.55, 0.05)


def figure_by_hand(kp, ident, size):
    """The expected canvas of ``draw_person(kp, ident)`` (a ``size`` canvas of zeros)
    and its unsure pixels, from draw_person's documented figure."""
    s = S.SUPERSAMPLE
    J = P.J
    o = FigureOracle(size)
    there = [bool((kp[j] >= 0).all()) for j in range(18)]

    def pt(name):
        return (float(kp[J[name], 0]) + 0.5) * s, (float(kp[J[name], 1]) + 0.5) * s

    sides = [float(((kp[J[f"{k}_hip"]] - kp[J[f"{k}_shoulder"]]) ** 2).sum()) for k in "rl"
             if there[J[f"{k}_hip"]] and there[J[f"{k}_shoulder"]]]
    st = (sum(sides) / len(sides)) ** 0.5 * s

    def has(*names):
        return all(there[J[n]] for n in names)

    def limb(a, b, width, colour):
        if has(a, b):
            o.limb(pt(a), pt(b), width, colour)

    if ident.bag is not None and has("r_hip", "r_shoulder"):
        hx, hy = pt("r_hip")
        box = (hx - 0.35 * st, hy - 0.45 * st, hx + 0.1 * st, hy + 0.05 * st)
        o.paint(lambda g: o.box_inside(box, 0.06 * st, g), ident.bag)
    for k in "rl":
        limb(f"{k}_knee", f"{k}_ankle", 0.255 * st, ident.skin if ident.shorts else ident.trousers)
        limb(f"{k}_hip", f"{k}_knee", 0.3 * st, ident.trousers)
        if has(f"{k}_ankle"):
            ax, ay = pt(f"{k}_ankle")
            o.ellipse((ax - 0.17 * st, ay - 0.07 * st, ax + 0.17 * st, ay + 0.1 * st), ident.shoes)
    if has("r_shoulder", "l_shoulder", "r_hip", "l_hip"):
        quad = [pt(n) for n in ("r_shoulder", "l_shoulder", "l_hip", "r_hip")]
        cx = sum(x for x, _ in quad) / 4
        quad = [(cx + (x - cx) * 1.25, y) for x, y in quad]
        o.paint(lambda g: o.quad_inside(quad, g), ident.shirt, TIGHT)
        if ident.pattern == "stripes":
            top = min(y for _, y in quad)
            for k in range(40):
                y0 = top + k * 0.16 * st
                o.paint(lambda g: o.quad_inside(quad, g) & (o.y >= int(y0) - g) & (o.y <= int(y0 + 0.07 * st) + g),
                        ident.shirt2, TIGHT)
        elif ident.pattern == "two-tone":
            mid = (quad[0][1] + quad[3][1]) / 2
            o.paint(lambda g: o.quad_inside(quad, g) & (o.y >= int(mid) - g), ident.shirt2, TIGHT)
    for k in "rl":
        limb(f"{k}_elbow", f"{k}_wrist", 0.18 * st, ident.shirt if ident.long_sleeves else ident.skin)
        limb(f"{k}_shoulder", f"{k}_elbow", 0.2 * st, ident.shirt)
        if has(f"{k}_wrist"):
            wx, wy = pt(f"{k}_wrist")
            o.ellipse((wx - 0.09 * st, wy - 0.09 * st, wx + 0.09 * st, wy + 0.09 * st), ident.skin)
    head = [j for j in P.HEAD_JOINTS if there[j]]
    if head:
        hx = sum((float(kp[j, 0]) + 0.5) * s for j in head) / len(head)
        hy = sum((float(kp[j, 1]) + 0.5) * s for j in head) / len(head)
        if has("neck"):
            width = max(1, int(0.16 * st))
            o.paint(lambda g: o.segment(pt("neck"), (hx, hy), width / 2, None, g), ident.skin)
        r = 0.26 * st
        if ident.long_hair:
            box = (hx - 1.1 * r, hy - 1.1 * r, hx + 1.1 * r, hy + 1.6 * r)
            o.paint(lambda g: o.box_inside(box, r, g), ident.hair)
        o.ellipse((hx - r, hy - 1.15 * r, hx + r, hy + 1.05 * r), ident.hair)
        o.ellipse((hx - 0.85 * r, hy - 0.75 * r, hx + 0.85 * r, hy + 1.05 * r), ident.skin)
    return o.colour, o.unsure


def star_pose():
    """Arms out to the sides, legs apart: every garment shows (image pixels)."""
    kp = torch.full((18, 2), -1.0)
    for name, xy in {"nose": (32, 12), "neck": (32, 24), "r_shoulder": (23, 27), "l_shoulder": (41, 27),
                     "r_elbow": (13, 33), "l_elbow": (51, 33), "r_wrist": (5, 40), "l_wrist": (59, 40),
                     "r_hip": (26, 66), "l_hip": (38, 66), "r_knee": (20, 90), "l_knee": (45, 91),
                     "r_ankle": (16, 116), "l_ankle": (49, 117), "r_eye": (29, 10), "l_eye": (35, 10),
                     "r_ear": (27, 12), "l_ear": (37, 12)}.items():
        kp[P.J[name]] = torch.tensor(xy, dtype=torch.float32)
    return kp


def test_draw_person_matches_its_figure_drawn_independently():
    """Every pixel of the drawn canvas, but those within 1.5 px of a shape's edge,
    against figure_by_hand: each garment's shape, size, place and colour, the drawing
    order, and what is skipped when joints are missing."""
    J = P.J
    base = dict(pattern="plain", bag=None, shorts=False, long_sleeves=True, long_hair=False,
                trousers=(250, 10, 10), shirt=(10, 250, 10), shirt2=(250, 250, 10), skin=(250, 10, 250),
                hair=(10, 250, 250), shoes=(120, 120, 120))
    variants = [{}, {"bag": (255, 255, 255)}, {"shorts": True, "long_sleeves": False},
                {"pattern": "stripes", "long_hair": True}, {"pattern": "two-tone", "bag": (255, 255, 255)}]
    bank = S.load_pose_bank()
    at_edge = star_pose()  # the torso past the left edge (the right arm and leg out of the frame: missing)
    at_edge[:, 0] -= 22
    at_edge[(at_edge < 0).any(1)] = -1
    at_edge[J["r_hip"], 0] = 0
    poses = [star_pose(), S.jitter_pose(bank[7], random.Random(1)), S.jitter_pose(bank[120], random.Random(2)), at_edge]
    for gone in (["r_shoulder"], ["l_shoulder"], ["r_hip"], ["l_hip"], ["r_ankle", "l_wrist", "neck"],
                 ["nose", "r_eye", "r_ear"], ["nose", "r_eye", "l_eye", "r_ear", "l_ear"]):
        kp = star_pose()
        kp[[J[n] for n in gone]] = -1
        poses.append(kp)
    cases = [(kp, changes, 1) for i, kp in enumerate(poses) for changes in (variants if i < 4 else variants[1:2] + variants[4:])]
    # four times larger: an edge that moves by a pixel at the usual size moves by four here
    cases += [(star_pose() * 4, {}, 4), (star_pose() * 4, {"long_hair": True, "pattern": "stripes"}, 4)]
    for case, (kp, changes, scale) in enumerate(cases):
        size = (S.HEIGHT * S.SUPERSAMPLE * scale, S.WIDTH * S.SUPERSAMPLE * scale)
        ident = S.Identity(**dict(base, **changes))
        canvas = Image.new("RGB", (size[1], size[0]), (0, 0, 0))
        S.draw_person(canvas, kp, ident, random.Random(0))
        drawn = np.asarray(canvas).astype(int)
        want, unsure = figure_by_hand(kp, ident, size)
        sure = ~unsure
        figure = (want != 0).any(-1)
        assert (figure & sure).sum() > 0.6 * figure.sum() > 0.1 * figure.size, case  # most of it compared
        wrong = sure & (drawn != want).any(-1)
        assert not wrong.any(), (case, int(wrong.sum()), np.argwhere(wrong)[:3].tolist())


def test_the_neck_is_a_line_at_least_one_pixel_wide():
    """0.16 st wide, rounded down, and never under 1 px: a torso of 12 canvas pixels
    (int(1.92) = 1) with the head far above the neck joint."""
    kp = torch.full((18, 2), -1.0)
    for name, xy in {"r_shoulder": (30, 60), "l_shoulder": (34, 60), "r_hip": (30, 64), "l_hip": (34, 64),
                     "neck": (32, 58), "nose": (32, 20)}.items():
        kp[P.J[name]] = torch.tensor(xy, dtype=torch.float32)
    assert float(P.torso_size(kp)) * S.SUPERSAMPLE == 12
    ident = S.Identity(shirt=(10, 250, 10), shirt2=(10, 250, 10), pattern="plain", long_sleeves=True,
                       trousers=(250, 10, 10), shorts=False, skin=(250, 10, 250), hair=(10, 250, 250),
                       long_hair=False, shoes=(120, 120, 120), bag=None)
    canvas = Image.new("RGB", (S.WIDTH * S.SUPERSAMPLE, S.HEIGHT * S.SUPERSAMPLE), (0, 0, 0))
    S.draw_person(canvas, kp, ident, random.Random(0))
    skin = (np.asarray(canvas) == (250, 10, 250)).all(-1)
    for row in (100, 120, 150):  # between the face and the torso
        assert skin[row].sum() == 1 and abs(np.argmax(skin[row]) - 97.5) <= 0.5, row


def background_by_hand(seed, camera, size, studio):
    """random_background's canvas from its docstring: the same draws from
    random.Random(seed) in the documented order, each pixel's value worked out in
    float64. Returns the expected uint8 canvas and the pixels left out of the
    comparison: values within 1e-3 of a whole number (float32 may round them either
    way) and pixels within 1 px of a block's edge (PIL's rounding of its corners)."""
    rng = random.Random(seed)
    s = S.SUPERSAMPLE
    H, W = size
    h, w = H * s, W * s
    y = (np.arange(h) / (h - 1))[:, None, None]
    xs, ys = np.meshgrid(np.arange(w), np.arange(h))
    blocks = []
    if studio:
        tone = rng.uniform(222, 246)
        tint = np.array([tone + rng.uniform(-6, 6) for _ in range(3)])
        value = np.broadcast_to(tint * (1 - 0.06 * y), (h, w, 3))
    else:
        base = np.array(S.CAMERA_BASE[camera % 6], float) + np.array([rng.uniform(-25, 25) for _ in range(3)])
        horizon = rng.uniform(0.45, 0.75)
        value = np.broadcast_to(np.where(y < horizon, base * (0.9 + 0.2 * y), 0.7 * base * (1.1 - 0.2 * y)), (h, w, 3))
        k = H / 128
        for _ in range(rng.randint(1, 4)):
            x0, y0 = rng.uniform(-10 * k, W), rng.uniform(-10 * k, H * horizon)
            bw, bh = rng.uniform(8 * k, 40 * k), rng.uniform(10 * k, 60 * k)
            colour = [int(min(max(c + rng.uniform(-60, 60), 0), 255)) for c in base]
            blocks.append(((x0 * s, y0 * s, (x0 + bw) * s, (y0 + bh) * s), colour))
    unsure = (np.abs(value - np.round(value)) < 1e-3).any(-1)
    want = np.floor(np.clip(value, 0, 255)).astype(int)
    for (x0, y0, x1, y1), colour in blocks:
        def inside(g):
            return (xs >= x0 - g) & (xs <= x1 + g) & (ys >= y0 - g) & (ys <= y1 + g)
        inner, outer = inside(-1.0), inside(1.0)
        want[inner] = colour
        unsure[inner] = False
        unsure[outer & ~inner] = True
    return want, unsure, len(blocks)


def test_backgrounds_match_their_documented_draws():
    """Studio and street canvases of several seeds, cameras and sizes, pixel for pixel
    against background_by_hand (blocks included; every block count from 1 to 4 seen;
    seeds 437 and 106 give a block a channel below 0 and below 1 before its clipping)."""
    counts = set()
    for seed, camera, size, studio in [(0, 0, (128, 64), False), (1, 3, (128, 64), False), (2, 7, (40, 30), False),
                                       (3, 5, (256, 256), False), (4, 2, (128, 64), True), (5, 1, (256, 256), True),
                                       (437, 5, (128, 64), False), (106, 5, (128, 64), False)] + \
            [(seed, seed % 6, (64, 32), False) for seed in range(6, 16)]:
        drawn = np.asarray(S.random_background(random.Random(seed), camera, size, studio)).astype(int)
        want, unsure, blocks = background_by_hand(seed, camera, size, studio)
        counts.add(blocks)
        assert drawn.shape == want.shape == (size[0] * S.SUPERSAMPLE, size[1] * S.SUPERSAMPLE, 3)
        assert unsure.mean() < 0.1, (seed, unsure.mean())
        wrong = ~unsure & (drawn != want).any(-1)
        assert not wrong.any(), (seed, int(wrong.sum()), np.argwhere(wrong)[:3].tolist())
    assert counts == {0, 1, 2, 3, 4}


def test_render_image_is_the_figure_on_its_background_resized_lit_and_noised():
    """render_image from its parts: the background and the figure drawn with the same
    draws from rng, the canvas resized to ``size`` with Lanczos, times the camera's gain
    0.85 + 0.06 * (camera % 5) + uniform(-0.05, 0.05), plus Gaussian noise of sd 3 from
    numpy's default_rng seeded with rng.randint(0, 2**31), clipped and truncated."""
    kp = S.jitter_pose(S.load_pose_bank()[3], random.Random(0))
    ident = S.random_identity(random.Random(1))
    for camera, size, studio, kwargs in [(0, (128, 64), False, {}), (4, (128, 64), False, {}),
                                         (7, (64, 32), False, {"size": (64, 32)}),
                                         (2, (256, 256), True, {"size": (256, 256), "studio": True})]:
        pose = S.fashion_pose(kp) if size == (256, 256) else kp * size[0] / 128
        im = S.render_image(pose, ident, camera, random.Random(camera), **kwargs)
        rng = random.Random(camera)
        canvas = S.random_background(rng, camera, size, studio)
        S.draw_person(canvas, pose, ident, rng)
        value = np.asarray(canvas.resize((size[1], size[0]), Image.LANCZOS)).astype(float)
        value = value * (0.85 + 0.06 * (camera % 5) + rng.uniform(-0.05, 0.05))
        value = value + np.random.default_rng(rng.randint(0, 2**31)).normal(0, 3.0, value.shape)
        want = np.floor(np.clip(value, 0, 255))
        sure = (np.abs(value - np.round(value)) > 1e-3).all(-1)  # float32 may round the others either way
        drawn = np.asarray(im).astype(float)
        assert im.mode == "RGB" and drawn.shape == (size[0], size[1], 3) and sure.mean() > 0.95
        assert (drawn == want)[sure].all(), (camera, int((drawn != want)[sure].sum()))


def test_studio_backdrop_is_light_and_darkens_evenly_downwards():
    for seed in range(5):
        im = np.asarray(S.random_background(random.Random(seed), 3, (20, 10), studio=True)).astype(float)
        assert im.shape == (20 * S.SUPERSAMPLE, 10 * S.SUPERSAMPLE, 3)
        assert (im == im[:, :1]).all()  # every row one colour
        top, bottom = im[0, 0], im[-1, 0]
        assert (210 <= top).all() and (top <= 252).all()
        assert np.allclose(bottom / top, 0.94, atol=0.01)
        assert (np.diff(im[:, 0].mean(1)) <= 0).all()


def test_street_background_has_the_cameras_colour_and_size():
    base = np.array(S.CAMERA_BASE[2], float)
    means = []
    for seed in range(30):
        im = np.asarray(S.random_background(random.Random(seed), 2 + len(S.CAMERA_BASE))).astype(float)
        assert im.shape == (S.HEIGHT * S.SUPERSAMPLE, S.WIDTH * S.SUPERSAMPLE, 3)
        means.append(im[:, :, :].reshape(-1, 3).mean(0))
    assert np.abs(np.mean(means, 0) - base * 0.9).max() < 25
    big = S.random_background(random.Random(0), 1, (256, 256))
    assert big.size == (256 * S.SUPERSAMPLE, 256 * S.SUPERSAMPLE)


def test_render_image_size_brightness_per_camera_and_noise():
    kp = S.jitter_pose(S.load_pose_bank()[0], random.Random(0))
    ident = S.random_identity(random.Random(0))
    im = S.render_image(kp, ident, 1, random.Random(3))
    assert im.size == (S.WIDTH, S.HEIGHT) and im.mode == "RGB"
    fashion = S.render_image(S.fashion_pose(kp), ident, 1, random.Random(3), S.FASHION_SIZE, studio=True)
    assert fashion.size == (256, 256)
    corner = np.asarray(fashion).astype(float)[:20, :20]
    assert 190 < corner.mean() < 255 and 1.5 < corner.std() < 6  # light studio, noise of sd 3
    # camera 4's gain is 0.24 above camera 0's (0.85 + 0.06 * (camera % 5)); the same
    # random draws otherwise (camera 5 = camera 0 + len(CAMERA_BASE) - 1 uses another base)
    dark = np.asarray(S.render_image(kp, ident, 0, random.Random(3), studio=True, size=(64, 32))).astype(float)
    light = np.asarray(S.render_image(kp, ident, 4, random.Random(3), studio=True, size=(64, 32))).astype(float)
    ratio = light[light < 250].mean() / dark[light < 250].mean()
    assert abs(ratio - 1.09 / 0.85) < 0.03


def test_make_dataset_layout_names_split_and_metadata(tmp_path):
    with pytest.raises(ValueError) as err:
        S.make_dataset(str(tmp_path / "x"), ids=1, images_per_id=3, progress=False)
    assert str(err.value) == "need at least 2 ids and 2 images per id, got ids=1, images_per_id=3"
    with pytest.raises(ValueError):
        S.make_dataset(str(tmp_path / "x"), ids=3, images_per_id=1, progress=False)
    assert not (tmp_path / "x").exists()
    out = tmp_path / "set"
    paths = S.make_dataset(str(out), ids=6, images_per_id=4, seed=2, cameras=3, test_fraction=0.34, test_pairs=5,
                           progress=False)
    assert paths == {f"{kind}_{split}": str(out / f"{kind}-{split}.csv")
                     for split in ("train", "test") for kind in ("annotations", "pairs")}
    train = M.read_annotations(paths["annotations_train"])
    test = M.read_annotations(paths["annotations_test"])
    assert sorted(os.listdir(out / "bounding_box_train")) == sorted(train)
    assert sorted(os.listdir(out / "bounding_box_test")) == sorted(test)
    assert {n[:4] for n in train} == {"0001", "0002", "0003", "0004"} and {n[:4] for n in test} == {"0005", "0006"}
    names = list(train) + list(test)
    assert len(names) == 24
    frames = [int(n.split("_")[2]) for n in names]
    assert all(1 <= b - a <= 50 for a, b in zip(frames, frames[1:]))
    assert {n.split("_")[1] for n in names} <= {"c1s1", "c2s1", "c3s1"} and all(n.endswith("_00.jpg") for n in names)
    for name, kp in list(train.items())[:4]:
        ok = P.present(kp)
        assert torch.equal(kp, kp.round()) and int(ok.sum()) >= 14
        with Image.open(out / "bounding_box_train" / name) as im:
            assert im.size == (S.WIDTH, S.HEIGHT) and im.format == "JPEG"
    assert M.read_pairs(paths["pairs_train"]) == M.standard_pairs(train)
    assert M.read_pairs(paths["pairs_test"]) == M.standard_pairs(test, sample=5, seed=2)
    assert json.loads((out / "SYNTHETIC.json").read_text()) == dict(
        ids=6, images_per_id=4, seed=2, cameras=3, test_ids=2, generator="deformgan.data.synthetic")
    one = tmp_path / "one"
    S.make_dataset(str(one), ids=2, images_per_id=2, seed=0, test_fraction=0.0, progress=False)
    assert len(M.read_annotations(str(one / "annotations-test.csv"))) == 2  # at least one test id


def test_make_dataset_shows_progress(tmp_path, capsys):
    S.make_dataset(str(tmp_path), ids=2, images_per_id=2, progress=True)
    err = capsys.readouterr().err
    assert "synthetic people: 100%" in err and "4/4" in err and "img/s]" in err
    S.make_dataset(str(tmp_path / "quiet"), ids=2, images_per_id=2, progress=False)
    assert capsys.readouterr().err == ""


@pytest.fixture
def plain_pictures(monkeypatch):
    """render_image replaced by a flat grey picture: the set's bookkeeping, fast."""
    monkeypatch.setattr(S, "render_image", lambda kp, ident, camera, rng, *a, **k: Image.new("RGB", (64, 128),
                                                                                            (128, 128, 128)))


def test_make_dataset_defaults_are_the_documented_demo_set(tmp_path, plain_pictures, capsys):
    """60 identities (the last 12 held out) of 6 images from 6 cameras, seed 0, 200 sampled
    test pairs, a progress bar."""
    S.make_dataset(str(tmp_path / "default"))
    assert "synthetic people: 100%" in capsys.readouterr().err
    train = M.read_annotations(str(tmp_path / "default" / "annotations-train.csv"))
    test = M.read_annotations(str(tmp_path / "default" / "annotations-test.csv"))
    assert len({n[:4] for n in train}) == 48 and len({n[:4] for n in test}) == 12 and len(train) + len(test) == 360
    assert {n.split("_")[1] for n in list(train) + list(test)} == {f"c{c}s1" for c in range(1, 7)}
    assert len(M.read_pairs(str(tmp_path / "default" / "pairs-test.csv"))) == 200
    S.make_dataset(str(tmp_path / "seed0"), ids=60, images_per_id=6, seed=0, progress=False)
    for f in ("annotations-train.csv", "pairs-test.csv"):
        assert (tmp_path / "default" / f).read_bytes() == (tmp_path / "seed0" / f).read_bytes()


def test_make_dataset_cameras_and_frames(tmp_path, plain_pictures):
    """An image's camera is uniform over 1..cameras whatever its rank k within its
    identity (1 + (k + r) % cameras with r uniform in 0..cameras-1); frame numbers start
    from 0 and grow by 1 to 50 per image."""
    S.make_dataset(str(tmp_path), ids=600, images_per_id=2, seed=3, cameras=6, progress=False)
    names = sorted(os.listdir(tmp_path / "bounding_box_train")) + sorted(os.listdir(tmp_path / "bounding_box_test"))
    frames = sorted(int(n.split("_")[2]) for n in names)
    steps = [b - a for a, b in zip(frames, frames[1:])]
    assert min(steps) == 1 and max(steps) == 50 and abs(sum(steps) / len(steps) - 25.5) < 1.5
    by_id = {}
    for n in names:
        by_id.setdefault(n[:4], []).append((int(n.split("_")[2]), int(n.split("_")[1][1:-2])))
    first = collections.Counter(min(v)[1] for v in by_id.values())  # each identity's first image (k = 0)
    assert sorted(first) == [1, 2, 3, 4, 5, 6]
    assert all(abs(c / 600 - 1 / 6) < 0.05 for c in first.values()), first
    firsts = []
    for seed in range(200):
        out = tmp_path / f"s{seed}"
        S.make_dataset(str(out), ids=2, images_per_id=2, seed=seed, test_pairs=1, progress=False)
        firsts.append(min(int(n.split("_")[2]) for n in os.listdir(out / "bounding_box_train")))
    assert min(firsts) == 1 and max(firsts) <= 50


def assert_jpeg_quality_95(path, tmp_path):
    """``path`` is a JPEG saved at quality 95: its quantisation tables are those of the
    same picture saved again at 95."""
    with Image.open(path) as im:
        assert im.format == "JPEG"
        tables = im.quantization
        im.convert("RGB").save(tmp_path / "q95.jpg", quality=95)
    with Image.open(tmp_path / "q95.jpg") as ref:
        assert tables == ref.quantization


def test_make_dataset_writes_into_an_existing_folder_as_jpeg_quality_95(tmp_path):
    (tmp_path / "bounding_box_train").mkdir()
    S.make_dataset(str(tmp_path), ids=2, images_per_id=2, seed=0, progress=False)
    name = sorted(os.listdir(tmp_path / "bounding_box_train"))[0]
    assert_jpeg_quality_95(tmp_path / "bounding_box_train" / name, tmp_path)
    S.make_dataset(str(tmp_path), ids=2, images_per_id=2, seed=0, progress=False)  # again, over the first


def test_cli_passes_its_options_and_reports(tmp_path, monkeypatch, capsys):
    calls = []

    def fake(out_dir, ids, images_per_id, seed, test_pairs):
        calls.append((out_dir, ids, images_per_id, seed, test_pairs))
        return {"annotations_train": os.path.join(out_dir, "annotations-train.csv"),
                "pairs_test": os.path.join(out_dir, "pairs-test.csv")}
    monkeypatch.setattr(S, "make_dataset", fake)
    assert S.main([str(tmp_path)]) == 0
    assert S.main([str(tmp_path), "--ids", "3", "--images-per-id", "2", "--seed", "7", "--test-pairs", "9"]) == 0
    assert calls == [(str(tmp_path), 60, 6, 0, 200), (str(tmp_path), 3, 2, 7, 9)]
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and err[0].startswith(f"synthetic Market-format set written to {tmp_path} in ")
    assert err[0].endswith(" s: annotations_train=annotations-train.csv, pairs_test=pairs-test.csv")
    seconds = float(err[0].split(" in ")[1].split(" s: ")[0])
    assert 0 <= seconds < 30  # the time it took, not a clock reading
    for bad in (["--ids", "1"], ["--images-per-id", "1"], ["--seed", "-1"], ["--test-pairs", "0"]):
        with pytest.raises(SystemExit) as exit_:
            S.main([str(tmp_path), *bad])
        assert exit_.value.code == 2 and bad[0] in capsys.readouterr().err
    assert len(calls) == 2


def test_cli_help_and_its_smallest_accepted_values(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(S, "make_dataset", lambda *a, **k: calls.append((a, k)) or {})
    assert S.main([str(tmp_path), "--ids", "2", "--images-per-id", "2", "--seed", "0", "--test-pairs", "1"]) == 0
    assert calls == [((str(tmp_path), 2, 2, 0), {"test_pairs": 1})]
    from helpers import help_text
    monkeypatch.setenv("COLUMNS", "200")  # no wrapping of the help lines
    out = help_text(S.main, capsys)
    assert out.startswith("usage: python -m deformgan.data.synthetic [-h] [--ids IDS]")
    # the module docstring as written, line breaks kept (RawDescriptionHelpFormatter)
    assert "\n`python -m deformgan.data.synthetic OUT_DIR [--ids N] [--images-per-id M] [--seed S]`\n\n" in out
    assert "  --ids IDS " in out and "identities (the last 20% are the test split)\n" in out
    assert "  --test-pairs TEST_PAIRS\n" in out and "sampled test pairs\n" in out


def test_make_fashion_tree_defaults_progress_and_smallest_sizes(tmp_path, monkeypatch, capsys):
    """40 items of 4 images, seed 0, a progress bar counting images; 2 items of 2 images
    is the smallest set; item i is photographed by camera 1 + i % 6 (its gain) in the
    studio at 256x256."""
    calls = []

    def plain(kp, ident, camera, rng, size, studio):
        calls.append((camera, size, studio))
        return Image.new("RGB", (64, 128), (128, 128, 128))
    monkeypatch.setattr(S, "render_image", plain)
    root = tmp_path / "default"
    S.make_fashion_tree(str(root))
    assert calls == [(1 + item % 6, (256, 256), True) for item in range(1, 41) for _ in range(4)]
    err = capsys.readouterr().err
    assert "synthetic fashion: 100%" in err and "160/160" in err and ("img/s" in err or "s/img" in err)
    assert json.loads((root / "SYNTHETIC.json").read_text()) == dict(
        items=40, images_per_item=4, seed=0, size=[256, 256], generator="deformgan.data.synthetic.make_fashion_tree")
    assert len(M.read_annotations(str(root / "keypoints.csv"))) == 160
    assert_jpeg_quality_95(next((root / "img").rglob("*.jpg")), tmp_path)
    S.make_fashion_tree(str(tmp_path / "seed0"), items=40, images_per_item=4, seed=0, progress=False)
    assert capsys.readouterr().err == ""
    assert (root / "keypoints.csv").read_bytes() == (tmp_path / "seed0" / "keypoints.csv").read_bytes()
    S.make_fashion_tree(str(tmp_path / "small"), items=2, images_per_item=2, progress=False)
    assert len(M.read_annotations(str(tmp_path / "small" / "keypoints.csv"))) == 4
    S.make_fashion_tree(str(tmp_path / "small"), items=2, images_per_item=2, progress=False)  # again, over it


def test_fashion_pose_doubles_and_centres_a_market_pose():
    kp = torch.full((18, 2), -1.0)
    kp[0] = torch.tensor([10.0, 20.0])
    kp[1] = torch.tensor([0.0, 127.0])
    got = S.fashion_pose(kp)
    assert got[0].tolist() == [84.0, 40.0] and got[1].tolist() == [64.0, 254.0]
    assert (got[2:] == -1).all()


def test_make_fashion_tree_layout_names_keypoints_and_metadata(tmp_path, capsys):
    with pytest.raises(ValueError) as err:
        S.make_fashion_tree(str(tmp_path / "x"), items=1, images_per_item=3, progress=False)
    assert str(err.value) == "need at least 2 items and 2 images per item, got 1, 3"
    with pytest.raises(ValueError):
        S.make_fashion_tree(str(tmp_path / "x"), items=2, images_per_item=1, progress=False)
    root = tmp_path / "tree"
    path = S.make_fashion_tree(str(root), items=3, images_per_item=5, seed=1, progress=True)
    assert "synthetic fashion" in capsys.readouterr().err
    assert path == str(root / "keypoints.csv")
    files = sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root / "img") for f in fs)
    assert len(files) == 15
    views = ["01_1_front.jpg", "02_2_side.jpg", "03_3_back.jpg", "04_4_full.jpg", "05_1_front.jpg"]
    for item, gender in ((1, "WOMEN"), (2, "MEN"), (3, "WOMEN")):
        mine = [f for f in files if f"id_{item:08d}" in f]
        assert [os.path.basename(f) for f in mine] == views
        g, category, folder = mine[0].split(os.sep)[1:4]
        assert g == gender and category in S.FASHION_CATEGORIES[gender] and folder == f"id_{item:08d}"
        with Image.open(root / mine[0]) as im:
            assert im.size == (256, 256)
            assert np.asarray(im)[:8, :8].mean() > 190  # the light studio
    ann = M.read_annotations(path)
    assert sorted(ann) == sorted(field_name(f) for f in files)
    for kp in ann.values():
        ok = P.present(kp)
        assert int(ok.sum()) >= 14 and torch.equal(kp, kp.round())
        assert kp[ok, 0].min() >= 64 and kp[ok, 0].max() <= 64 + 2 * (S.WIDTH - 3)
        assert (kp[ok, 0] % 2 == 0).all() and (kp[ok, 1] % 2 == 0).all()  # a rounded 128x64 pose, doubled
    assert json.loads((root / "SYNTHETIC.json").read_text()) == dict(
        items=3, images_per_item=5, seed=1, size=[256, 256], generator="deformgan.data.synthetic.make_fashion_tree")
