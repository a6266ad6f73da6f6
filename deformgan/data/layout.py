"""Dataset folders: where a dataset's images, annotations and pairs are, found one
way for every command (training, evaluation, generation, ablation, re-ID
augmentation), and the synthetic demo set made on first use.

A Market-1501-layout folder holds ``bounding_box_train/`` and ``bounding_box_test/``
images, ``annotations-{split}.csv`` (or the original release's
``market-annotation-{split}.csv``) and optionally ``pairs-{split}.csv`` (or
``market-pairs-{split}.csv``). A DeepFashion folder (as
``python -m deformgan.data.deepfashion`` writes it) is read the same way, with its
images in ``train/`` and ``test/`` (the field's folder names) and the same CSVs (also
under the field's ``fasion-annotation-{split}.csv`` / ``fasion-pairs-{split}.csv``).
The identity of an image (whose pairs are drawn within) is the Market person id or the
DeepFashion clothing item id, from its name (:func:`deformgan.data.market.identity`).
"""
import os
import sys
from dataclasses import dataclass
from typing import Optional

SPLITS = ("train", "test")
ANNOTATION_NAMES = ("annotations-{split}.csv", "market-annotation-{split}.csv", "fasion-annotation-{split}.csv")
PAIR_NAMES = ("pairs-{split}.csv", "market-pairs-{split}.csv", "fasion-pairs-{split}.csv")
IMAGE_FOLDERS = ("bounding_box_{split}", "{split}")  # Market-1501, DeepFashion


def default_cache() -> str:
    """``$DEFORMGAN_CACHE``, else ``~/.cache/deformgan``."""
    return os.environ.get("DEFORMGAN_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "deformgan"))


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return split


@dataclass(frozen=True)
class DatasetLayout:
    """The files of one dataset folder."""
    root: str

    def _first(self, patterns, split: str) -> Optional[str]:
        for pattern in patterns:
            path = os.path.join(self.root, pattern.format(split=_check_split(split)))
            if os.path.exists(path):
                return path
        return None

    def images(self, split: str) -> str:
        """The image folder of a split: ``bounding_box_{split}/`` (Market-1501) or
        ``{split}/`` (DeepFashion), the first that exists (else the Market name)."""
        _check_split(split)
        for pattern in IMAGE_FOLDERS:
            path = os.path.join(self.root, pattern.format(split=split))
            if os.path.isdir(path):
                return path
        return os.path.join(self.root, IMAGE_FOLDERS[0].format(split=split))

    def has_images(self, split: str) -> bool:
        return os.path.isdir(self.images(split))

    def annotations(self, split: str) -> Optional[str]:
        """The split's annotation CSV, None when the folder has none."""
        return self._first(ANNOTATION_NAMES, split)

    def pairs(self, split: str) -> Optional[str]:
        """The split's pairs CSV, None when the folder has none (pairs are then made
        by the standard rule, :func:`deformgan.data.market.standard_pairs`)."""
        return self._first(PAIR_NAMES, split)

    def require_annotations(self, split: str) -> str:
        path = self.annotations(split)
        if path is None:
            names = " or ".join(p.format(split=split) for p in ANNOTATION_NAMES)
            raise FileNotFoundError(f"no {split} annotations in {self.root} ({names}); make them with "
                                    "python -m deformgan.keypoints, or pass --annotations")
        return path


def discover(root: str) -> DatasetLayout:
    """The layout of an existing dataset folder (FileNotFoundError naming it otherwise)."""
    if not os.path.isdir(root):
        raise FileNotFoundError(f"--data folder not found: {root}")
    return DatasetLayout(root)


def synthetic_root(ids: int, images_per_id: int) -> str:
    """Where the synthetic demo set of that size lives in the cache."""
    return os.path.join(default_cache(), f"synthetic-{ids}x{images_per_id}-seed0")


def _publish(tmp: str, root: str, marker: str) -> None:
    """Move the folder ``tmp``, made complete, to ``root`` in one rename, so that no
    process ever sees a half-made set there; if another process published first (its
    ``marker`` file is there), ours is discarded. A ``root`` left half-made by an older
    version (no marker) is replaced."""
    import shutil
    if os.path.exists(os.path.join(root, marker)):
        shutil.rmtree(tmp, ignore_errors=True)
        return
    if os.path.isdir(root):
        shutil.rmtree(root, ignore_errors=True)
    try:
        os.rename(tmp, root)
    except OSError:  # another process published between the check and the rename
        shutil.rmtree(tmp, ignore_errors=True)
        if not os.path.exists(os.path.join(root, marker)):
            raise


def ensure_synthetic(ids: int, images_per_id: int, make: bool = True) -> str:
    """The synthetic demo set's folder, made on first use (``make=False``: another
    process makes it). It is made in a temporary folder and renamed into place, so that
    several first runs at once (three trainings on an empty cache) never read a set
    another is still writing."""
    root = synthetic_root(ids, images_per_id)
    if make and not os.path.exists(os.path.join(root, "SYNTHETIC.json")):
        from .synthetic import make_dataset
        print(f"[deformgan] making the synthetic demo set in {root}", file=sys.stderr)
        tmp = f"{root}.tmp-{os.getpid()}"
        make_dataset(tmp, ids=ids, images_per_id=images_per_id, seed=0)
        _publish(tmp, root, "SYNTHETIC.json")
    return root


def ensure_synthetic_fashion(items: int, images_per_item: int, make: bool = True) -> str:
    """The synthetic DeepFashion-shaped demo set (256x256), made on first use: an In-shop
    tree of synthetic people (:func:`deformgan.data.synthetic.make_fashion_tree`) converted
    by :func:`deformgan.data.deepfashion.prepare` with their exact keypoints."""
    root = os.path.join(default_cache(), f"synthetic-fashion-{items}x{images_per_item}-seed0")
    if make and not os.path.exists(os.path.join(root, "DEEPFASHION.json")):
        from .deepfashion import prepare
        from .synthetic import make_fashion_tree
        import shutil
        print(f"[deformgan] making the synthetic DeepFashion-shaped demo set in {root}", file=sys.stderr)
        tree = os.path.join(default_cache(), f"synthetic-fashion-tree-{items}x{images_per_item}-seed0.tmp-{os.getpid()}")
        tmp = f"{root}.tmp-{os.getpid()}"
        try:
            keypoints = make_fashion_tree(tree, items=items, images_per_item=images_per_item, seed=0)
            prepare(tree, tmp, annotations=keypoints, test_fraction=0.2, progress=False)
        finally:
            shutil.rmtree(tree, ignore_errors=True)
        _publish(tmp, root, "DEEPFASHION.json")
    return root
