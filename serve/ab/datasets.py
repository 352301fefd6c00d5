"""Labelled image sets as (PIL image, class index) producers, without torch.

Two sources: scikit-learn's handwritten digits (real, offline) and an ImageFolder directory.
Both split train/val/test the same stratified, seeded way, so a run is reproducible and the
held-out test images can be sent to a live server (by the tests and by `python -m serve.ab.evaluate`).
Training (resfam.data) reads its data through this module, so both see the same split.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from serve.runtime.preprocess import decode_image

SPLITS = ("train", "val", "test")
# One split for every run and model, whatever the training seed, so their test accuracies compare.
SPLIT_SEED = 0
TEST_FRACTION = 0.2
VAL_FRACTION = 0.1
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})

DIGIT_LABELS = tuple(str(d) for d in range(10))


@dataclass(frozen=True)
class LabelledImages:
    """A split: items are PIL images (held in memory) or files (decoded on access, as the server decodes)."""

    items: Sequence[Image.Image | Path]
    targets: Sequence[int]
    labels: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Image.Image, int]:
        item = self.items[index]
        img = decode_image(item.read_bytes()) if isinstance(item, Path) else item
        return img, self.targets[index]

    def subset(self, indexes: Sequence[int]) -> "LabelledImages":
        return LabelledImages([self.items[i] for i in indexes], [self.targets[i] for i in indexes], self.labels)

    def save_image_folder(self, root: str | Path) -> Path:
        """Write as PNGs in ImageFolder layout (root/<label>/<n>.png; classes without images get no folder)."""
        root = Path(root)
        for n in range(len(self)):
            img, target = self[n]
            folder = root / self.labels[target]
            folder.mkdir(parents=True, exist_ok=True)
            img.save(folder / f"{n:05d}.png")
        return root


def stratified_split(targets: Sequence[int], split: str, seed: int) -> list[int]:
    """Indexes of `split`: per class, a seeded shuffle cut into test 20%, val 10%, train the rest."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    targets = np.asarray(targets)
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for cls in np.unique(targets):
        idx = rng.permutation(np.flatnonzero(targets == cls))
        n_test, n_val = round(len(idx) * TEST_FRACTION), round(len(idx) * VAL_FRACTION)
        bounds = {"test": (0, n_test), "val": (n_test, n_test + n_val), "train": (n_test + n_val, len(idx))}
        lo, hi = bounds[split]
        chosen.extend(idx[lo:hi].tolist())
    return sorted(chosen)


def render_digit(values: np.ndarray) -> Image.Image:
    """An 8x8 digit (16 gray levels) as 8-bit grayscale, white ink on black."""
    return Image.fromarray(np.round(np.asarray(values) * 255.0 / 16.0).astype(np.uint8), "L")


@lru_cache(maxsize=None)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits  # imported here: it costs about a second

    bunch = load_digits()
    return bunch.images, bunch.target


def digits(split: str = "test", seed: int = SPLIT_SEED) -> LabelledImages:
    """scikit-learn's 1,797 handwritten digits; labels "0".."9"."""
    images, targets = _digits_arrays()
    idx = stratified_split(targets, split, seed)
    return LabelledImages([render_digit(images[i]) for i in idx], [int(targets[i]) for i in idx], DIGIT_LABELS)


def image_folder(root: str | Path, split: str = "test", seed: int = SPLIT_SEED) -> LabelledImages:
    """One sub-folder per class (sorted names are the labels).

    If `root` has train/val/test sub-folders they are the splits; otherwise `root` is split here.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist")
    presplit = all((root / s).is_dir() for s in SPLITS)
    labels = _class_names(root / "train" if presplit else root)
    files, targets = _scan(root / split if presplit else root, labels)
    if not presplit:
        idx = stratified_split(targets, split, seed)
        files, targets = [files[i] for i in idx], [targets[i] for i in idx]
    return LabelledImages(files, targets, labels)


def _class_names(folder: Path) -> tuple[str, ...]:
    names = tuple(sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")))
    if not names:
        raise ValueError(f"{folder} has no class sub-folders")
    return names


def _scan(folder: Path, labels: tuple[str, ...]) -> tuple[list[Path], list[int]]:
    files: list[Path] = []
    targets: list[int] = []
    for target, name in enumerate(labels):
        found = sorted(p for p in (folder / name).glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        files.extend(found)
        targets.extend([target] * len(found))
    if not files:
        raise ValueError(f"no images under {folder}")
    return files, targets


def load_dataset(spec: str | Path, split: str, seed: int = SPLIT_SEED) -> LabelledImages:
    """`spec` is "digits" or an ImageFolder path."""
    return digits(split, seed) if str(spec) == "digits" else image_folder(spec, split, seed)
