"""deformgan/viz.py pixel by pixel against answers worked out by hand: the part colours,
the skeleton drawing, heatmaps and masks as pictures, grid geometry, the demo figure's
layout and its command."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from deformgan import pose as P
from deformgan import viz as V

RED, GREEN, BLUE = [255, 38, 38], [38, 255, 38], [38, 38, 255]  # hues 0, 1/3, 2/3 at s 0.85, v 1
CYAN = [38, 255, 255]  # hue 1/2


def test_part_colours_evenly_spaced_hues():
    assert V.part_colours(3).tolist() == [RED, GREEN, BLUE]
    assert V.part_colours(2).tolist() == [RED, CYAN]
    assert V.part_colours(1).dtype == np.uint8 and V.part_colours(0).shape == (0,)


def test_to_hwc_channels_last_uint8():
    x = torch.tensor([[[-1.0, 1.0]], [[0.0, 0.5]], [[1.0, -1.0]]])  # [3, 1, 2]
    out = V.to_hwc(x)
    assert out.shape == (1, 2, 3) and out.dtype == np.uint8
    assert out.tolist() == [[[0, 128, 255], [255, 191, 0]]]  # (v + 1) * 127.5 rounded half to even


def _kp(**joints):
    kp = torch.full((18, 2), -1.0)
    for name, xy in joints.items():
        kp[P.J[name]] = torch.tensor(xy, dtype=torch.float32)
    return kp


def test_draw_pose_limbs_in_their_colours_joints_white_with_black_outline():
    background = np.full((20, 24, 3), 50, dtype=np.uint8)
    kp = _kp(neck=(4, 10), r_shoulder=(16, 10), r_elbow=(-1, 3))  # the elbow is missing
    im = np.asarray(V.draw_pose(background, kp))
    assert im.shape == (20, 24, 3) and (background == 50).all()  # the input is not drawn on
    limb = P.LIMBS.index((1, 2))  # neck - right shoulder
    colour = V.part_colours(len(P.LIMBS))[limb].tolist()
    assert im[10, 10].tolist() == colour  # on the line, between the joints' discs
    assert im[9, 10].tolist() == [50, 50, 50] and im[11, 10].tolist() == [50, 50, 50]  # one pixel wide
    assert im[10, 4].tolist() == [255, 255, 255] and im[10, 16].tolist() == [255, 255, 255]  # the joints
    assert im[10, 2].tolist() == [0, 0, 0] and im[8, 4].tolist() == [0, 0, 0]  # radius 2: the outline
    assert im[10, 1].tolist() == [50, 50, 50] and im[3, 10].tolist() == [50, 50, 50]
    drawn = (im != 50).any(-1)
    assert not drawn[:7].any() and not drawn[14:].any()  # nothing towards the missing elbow
    big = np.asarray(V.draw_pose(background, kp, radius=3))
    assert big[10, 1].tolist() == [0, 0, 0] and big[10, 2].tolist() == [255, 255, 255]


def test_pose_image_on_black():
    im = V.pose_image(_kp(neck=(2, 3), r_shoulder=(5, 3)), 10, 7)
    a = np.asarray(im)
    assert im.size == (7, 10) and a[9, 0].tolist() == [0, 0, 0] and a[3, 2].tolist() == [255, 255, 255]
    assert V.pose_image(_kp()).size == (64, 128) and not np.asarray(V.pose_image(_kp())).any()


def test_heatmaps_to_image_max_over_joints_in_their_colours():
    h = torch.tensor([[[1.0, 0.5, 2.0, -1.0, 0.0, -1.0]], [[0.0, 0.5, 0.0, 0.2, 0.0, -0.5]]])  # [2, 1, 6]
    im = np.asarray(V.heatmaps_to_image(h.double().requires_grad_()))
    # pixel 1: max(0.5 * RED, 0.5 * CYAN) = [127.5, 127.5, 127.5] -> 127; pixel 2: 2 * RED clamped;
    # pixels 4 and 5: zero and negative heatmaps are black
    assert im.tolist() == [[RED, [127, 127, 127], [255, 76, 76], [7, 51, 51], [0, 0, 0], [0, 0, 0]]]


def test_masks_to_image_later_parts_on_top_first_part_skipped():
    m = torch.tensor([[[1.0, 1.0, 1.0, 1.0]], [[1.0, 1.0, 0.0, 0.0]], [[0.0, 0.3, 0.0, -0.5]]])  # [3, 1, 4]
    assert np.asarray(V.masks_to_image(m)).tolist() == [[GREEN, BLUE, [0, 0, 0], [0, 0, 0]]]
    assert np.asarray(V.masks_to_image(m, skip_first=False)).tolist() == [[GREEN, BLUE, RED, RED]]


def test_grid_geometry_titles_and_background():
    red = Image.new("RGB", (4, 3), (255, 0, 0))
    green = Image.new("L", (2, 2), 128)  # grey, pasted as RGB
    blue = Image.new("RGB", (4, 3), (0, 0, 255))
    out = np.asarray(V.grid([[red, green], [blue]]))
    assert out.shape == (2 * (3 + 2) + 2, 2 * (4 + 2) + 2, 3)
    want = np.full(out.shape, 255, dtype=np.uint8)
    want[2:5, 2:6] = [255, 0, 0]
    want[2:4, 8:10] = 128
    want[7:10, 2:6] = [0, 0, 255]
    assert np.array_equal(out, want)
    titled = np.asarray(V.grid([[red, green], [blue]], pad=1, background=(9, 9, 9), titles=["ab", "cd"]))
    assert titled.shape == (12 + 2 * (3 + 1) + 1, 2 * (4 + 1) + 1, 3)
    assert titled[12 + 1, 1].tolist() == [255, 0, 0] and titled[12 + 1 + 4, 1].tolist() == [0, 0, 255]
    assert titled[12 + 1, 6].tolist() == [128, 128, 128] and titled[12, 0].tolist() == [9, 9, 9]
    assert (titled[:12] == 0).all(-1).any()  # the titles, in black, above the images


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from deformgan.data.synthetic import make_dataset
    root = tmp_path_factory.mktemp("viz") / "data"
    make_dataset(str(root), ids=4, images_per_id=3, seed=1, progress=False)
    return root


def test_demo_figure_layout(synthetic, tmp_path):
    out = tmp_path / "sub" / "fig.png"
    assert V.demo_figure(str(synthetic), str(out), rows=2, upscale=1) == str(out)
    with Image.open(out) as im:
        fig = np.asarray(im.convert("RGB"))
    assert fig.shape == (12 + 2 * (128 + 2) + 2, 8 * (64 + 2) + 2, 3)
    cell = fig[12 + 2:12 + 2 + 128, 3 * 66 + 2:3 * 66 + 2 + 64]  # row 0, "target pose": a skeleton on black
    assert (cell == 0).all(-1).mean() > 0.5 and (cell == 255).all(-1).any()
    # 3 rows, twice the size; 18 pairs here: the third row's index, 26, wraps around to 8 (it was an IndexError)
    with Image.open(V.demo_figure(str(synthetic), str(tmp_path / "big.png"))) as im:
        assert im.size == (8 * (128 + 2) + 2, 12 + 3 * (256 + 2) + 2)


def test_demo_figure_cells(synthetic, tmp_path):
    """Each cell of a row is what its title says, for the dataset pair that row shows: the
    warps recomputed here with the reference backend, on images mapped to [0, 1] and back."""
    import deformgan_ops as D
    from deformgan.data.market import MarketPoseDataset
    from deformgan.geometry import render
    out = V.demo_figure(str(synthetic), str(tmp_path / "f.png"), rows=2, upscale=1)
    with Image.open(out) as im:
        fig = np.asarray(im.convert("RGB"))
    ds = MarketPoseDataset(str(synthetic), str(synthetic / "annotations-train.csv"), str(synthetic / "pairs-train.csv"),
                           split="train", heatmaps=False)

    def cell(r, c):
        return fig[12 + 2 + r * 130:12 + 2 + r * 130 + 128, 2 + c * 66:2 + c * 66 + 64]

    shown = []
    hwc = [V.to_hwc(ds[i]["source_image"]) for i in range(len(ds))]
    for r in range(2):
        (i,) = [i for i in range(len(ds)) if np.array_equal(hwc[i], cell(r, 0))
                and np.array_equal(V.to_hwc(ds[i]["target_image"]), cell(r, 7))]
        it = ds[i]
        shown.append(i)
        g = render(it["source_keypoints"][None], it["target_keypoints"][None], (128, 64), levels=(0,))
        src = (it["source_image"][None] + 1) / 2
        masks = g.masks[0]
        body = masks.clone()
        body[:, 0] = 0
        want = [np.asarray(V.draw_pose(hwc[i], it["source_keypoints"])),
                np.asarray(V.heatmaps_to_image(g.source_heatmaps[0])),
                np.asarray(V.pose_image(it["target_keypoints"])),
                np.asarray(V.masks_to_image(masks[0])),
                V.to_hwc(D.part_affine_warp(src, g.theta, body, backend="reference")[0] * 2 - 1),
                V.to_hwc(D.part_affine_warp(src, g.theta, masks, backend="reference")[0] * 2 - 1)]
        for c, w in enumerate(want, start=1):
            assert np.abs(cell(r, c).astype(int) - w.astype(int)).max() <= 1, (r, c)
    assert len(set(shown)) == 2  # two different pairs
    # upscaled cells are the same pictures, nearest-neighbour
    with Image.open(V.demo_figure(str(synthetic), str(tmp_path / "g.png"), rows=2, upscale=2)) as im:
        big = np.asarray(im.convert("RGB"))
    assert np.array_equal(big[12 + 2:12 + 2 + 256:2, 2:2 + 128:2], cell(0, 0))
    assert np.array_equal(big[12 + 2:12 + 2 + 256, 2:2 + 128], np.repeat(np.repeat(cell(0, 0), 2, 0), 2, 1))
    titles = ["source", "source pose", "heatmaps", "target pose", "part masks", "warped parts", "warped (all)",
              "target"]
    header = Image.new("RGB", (fig.shape[1], 12), (255, 255, 255))
    from PIL import ImageDraw
    for c, t in enumerate(titles):
        ImageDraw.Draw(header).text((2 + c * 66, 0), t, fill=(0, 0, 0))
    assert np.array_equal(fig[:12], np.asarray(header))


def test_grid_titles_start_at_their_columns():
    from PIL import ImageDraw
    tiles = [[Image.new("RGB", (30, 5), (200, 200, 200))] * 3]
    out = np.asarray(V.grid(tiles, pad=3, titles=["ab", "", "cd"]))
    want = Image.new("RGB", (out.shape[1], 12), (255, 255, 255))
    ImageDraw.Draw(want).text((3, 0), "ab", fill=(0, 0, 0))
    ImageDraw.Draw(want).text((3 + 2 * 33, 0), "cd", fill=(0, 0, 0))
    assert np.array_equal(out[:12], np.asarray(want)) and (out[:12] != 255).any()


def test_demo_figure_refuses_a_set_without_pairs(synthetic, tmp_path, capsys):
    import shutil
    empty = tmp_path / "empty"
    shutil.copytree(synthetic, empty)
    (empty / "pairs-train.csv").write_text("from,to\n")
    from helpers import assert_refused
    assert_refused(ValueError, f"no training pairs in {empty} to draw", V.demo_figure, str(empty),
                   str(tmp_path / "f.png"))
    assert V.main(["demo", str(tmp_path / "f.png"), "--data", str(empty)]) == 2
    assert capsys.readouterr().err == f"[deformgan.viz] error: no training pairs in {empty} to draw\n"
    assert V.main(["demo", str(tmp_path / "f.png"), "--data", str(tmp_path / "nope")]) == 2
    assert capsys.readouterr().err.startswith("[deformgan.viz] error: ")


def test_main_demo_with_and_without_data(synthetic, tmp_path, capsys, monkeypatch):
    out = tmp_path / "a.png"
    assert V.main(["demo", str(out), "--data", str(synthetic)]) == 0
    assert capsys.readouterr().err == f"{out}\n" and out.exists()
    made = []
    import deformgan.data.synthetic as S

    def make_dataset(root, **kw):  # the temporary set: made with these settings, then drawn from
        assert os.path.basename(root).startswith("deformgan-synthetic-") and os.path.isdir(root)
        made.append((root, kw))
        import shutil
        shutil.copytree(synthetic, root, dirs_exist_ok=True)

    monkeypatch.setattr(S, "make_dataset", make_dataset)
    assert V.main(["demo", str(tmp_path / "b.png")]) == 0
    assert [kw for _, kw in made] == [dict(ids=10, images_per_id=4, seed=1, progress=False)]
    assert (tmp_path / "b.png").exists() and not os.path.exists(made[0][0])  # the temporary set is removed
    with pytest.raises(SystemExit):
        V.main([])


def test_main_help_texts_and_usage_errors(capsys):
    from helpers import help_text, usage_error
    text = help_text(V.main, capsys)
    assert text.startswith("usage: python -m deformgan.viz [-h] {demo} ...")
    assert V.__doc__.strip() in text  # the module's description, its line breaks kept
    assert "demo the README figure from the synthetic set" in " ".join(text.split())
    demo = " ".join(help_text(lambda argv: V.main(["demo", *argv]), capsys).split())
    assert demo.startswith("usage: python -m deformgan.viz demo [-h] [--data DATA] out")
    assert "--data DATA a synthetic set (made in a temporary folder if omitted)" in demo
    assert usage_error(V.main, [], capsys) == ("python -m deformgan.viz: error: the following arguments are "
                                               "required: cmd")
