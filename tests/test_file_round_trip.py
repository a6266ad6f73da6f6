"""Every file the project writes, its own readers read back, or the writer refuses
the name clearly; a keypoints run killed mid-line resumes; names cannot reach
outside the data root; every CLI number is range-checked (README "Failure behaviour")."""
import os
import subprocess
import sys

import pytest
import torch

from deformgan import keypoints as KP
from deformgan.data.market import (AnnotationError, MarketPoseDataset, check_image_name, read_annotations,
                                   read_pairs, write_annotations, write_pairs)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KP18 = torch.arange(36, dtype=torch.float32).reshape(18, 2)

BAD_NAMES = ["a,b.jpg", "a:b.jpg", "../../x.jpg", "sub/x.jpg", "..", " lead.jpg", "line\nbreak.jpg", ""]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_writers_refuse_names_their_readers_could_not_read_back(name, tmp_path):
    with pytest.raises(AnnotationError, match="cannot be used: it (contains|is an empty)"):
        write_annotations(str(tmp_path / "a.csv"), {name: KP18})
    assert not (tmp_path / "a.csv").exists()  # refused before writing anything
    with pytest.raises(AnnotationError, match="cannot be used"):
        write_pairs(str(tmp_path / "p.csv"), [("ok.jpg", name)])
    assert not (tmp_path / "p.csv").exists()


def test_what_the_writers_accept_reads_back_identically(tmp_path):
    names = ["0002_c1s1_000451_03.jpg", "fashionMENDenimid0000008001_1front.jpg", "with space.jpg", "ünï.png"]
    ann = {n: KP18 + i for i, n in enumerate(names)}
    write_annotations(str(tmp_path / "a.csv"), ann)
    back = read_annotations(str(tmp_path / "a.csv"))
    assert list(back) == names and all(torch.equal(back[n], ann[n]) for n in names)
    pairs = [(names[0], names[1]), (names[2], names[3])]
    write_pairs(str(tmp_path / "p.csv"), pairs)
    assert read_pairs(str(tmp_path / "p.csv"), back) == pairs


@pytest.mark.parametrize("name", ["../../etc/passwd", "/abs/x.jpg", "a/../../b.jpg"])
def test_names_reaching_outside_the_data_root_are_refused_on_read(name, tmp_path):
    (tmp_path / "a.csv").write_text("name:keypoints_y:keypoints_x\n" + f"{name}: {[1] * 18}: {[1] * 18}\n")
    with pytest.raises(AnnotationError, match=r"a\.csv:2: image name .* path separator|relative folder"):
        read_annotations(str(tmp_path / "a.csv"))
    (tmp_path / "p.csv").write_text(f"from,to\nok.jpg,{name}\n")
    with pytest.raises(AnnotationError, match=r"p\.csv:2: image name"):
        read_pairs(str(tmp_path / "p.csv"))
    os.makedirs(tmp_path / "bounding_box_train")
    with pytest.raises(AnnotationError, match="pair image name"):
        MarketPoseDataset(str(tmp_path), {"ok.jpg": KP18, name: KP18}, [("ok.jpg", name)], heatmaps=False)


def test_a_partial_last_line_is_dropped_and_redone(tmp_path):
    path = tmp_path / "ann.csv"
    write_annotations(str(path), {"a.jpg": KP18, "b.jpg": KP18})
    with open(path, "a") as fh:
        fh.write("c.jpg: [1, 2, 3")  # a run killed mid-line
    dropped = KP.repair_partial_last_line(str(path))
    assert dropped == "c.jpg: [1, 2, 3"
    assert list(read_annotations(str(path))) == ["a.jpg", "b.jpg"]
    assert KP.repair_partial_last_line(str(path)) is None  # a clean file is left alone


class _FakeModel:
    """Stands in for YOLO: one result per image, no person found."""

    def predict(self, imgs, **kw):
        return [object() for _ in imgs]


def test_keypoints_resume_after_a_kill_and_refused_names(tmp_path):
    from PIL import Image

    images = tmp_path / "imgs"
    images.mkdir()
    for n in ["a.jpg", "b.jpg", "c,d.jpg", "e:f.jpg"]:
        Image.new("RGB", (8, 16)).save(images / n)
    out = tmp_path / "ann.csv"
    write_annotations(str(out), {"a.jpg": KP18})
    with open(out, "a") as fh:
        fh.write("b.jpg: [1, 2")  # killed while writing b's line
    written, skipped, problems = KP.extract(str(images), str(out), model=_FakeModel(), progress=False)
    assert (written, skipped) == (1, 1) and sorted(problems) == ["c,d.jpg", "e:f.jpg"]
    back = read_annotations(str(out))
    assert list(back) == ["a.jpg", "b.jpg"] and bool((back["b.jpg"] == -1).all())


@pytest.mark.parametrize("argv,message", [
    (["deformgan.keypoints", "d", "--out", "o", "--batch-size", "0"], "argument --batch-size: must be an int >= 1, got 0"),
    (["deformgan.keypoints", "d", "--out", "o", "--conf", "2"], "argument --conf: must be a number in [0, 1], got 2.0"),
    (["deformgan.evaluate", "--checkpoint", "x", "--max-pairs", "0"], "argument --max-pairs: must be an int >= 1, got 0"),
    (["deformgan.evaluate", "--checkpoint", "x", "--batch-size", "-2"], "argument --batch-size: must be an int >= 1"),
    (["deformgan.pairs", "a", "--out", "b", "--sample", "0"], "argument --sample: must be an int >= 1, got 0"),
    (["deformgan.ablation", "--steps", "0"], "argument --steps: must be an int >= 1, got 0"),
    (["deformgan.data.synthetic", "--ids", "1", "--out", "x"], "argument --ids: must be an int >= 2, got 1"),
])
def test_cli_numbers_are_range_checked(argv, message):
    proc = subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr[-500:]


def test_check_image_name_accepts_plain_names():
    assert check_image_name("0002_c1s1_000451_03.jpg") == "0002_c1s1_000451_03.jpg"
