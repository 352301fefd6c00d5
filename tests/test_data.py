"""Data sets: the digits rendering and split, ImageFolder, augmentation, and the one preprocessing path."""
from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
from PIL import Image

import serve.runtime.preprocess
from resfam import data
from resfam.data import DIGIT_LABELS, DIGITS_CONFIG, augment, digits, image_folder, preprocess_all, stratified_split


def test_digit_rendering_is_white_ink_on_black_8bit():
    values = np.array([[0, 1, 8, 16]] * 8, dtype=float).repeat(2, axis=1)
    img = data.render_digit(values)
    assert img.mode == "L" and img.size == (8, 8)
    assert list(np.asarray(img)[0, ::2]) == [0, round(255 / 16), 128, 255]


def test_digits_split_sizes_disjoint_and_complete():
    targets = data._digits_arrays()[1]
    parts = {s: stratified_split(targets, s, seed=0) for s in data.SPLITS}
    assert sum(len(p) for p in parts.values()) == len(targets) == 1797
    assert set().union(*map(set, parts.values())) == set(range(1797))
    assert len(parts["test"]) == pytest.approx(0.2 * 1797, abs=10)
    assert len(parts["val"]) == pytest.approx(0.1 * 1797, abs=10)


def test_digits_split_is_stratified():
    targets = data._digits_arrays()[1]
    per_class = Counter(targets.tolist())
    for split, fraction in (("test", 0.2), ("val", 0.1)):
        counts = Counter(targets[stratified_split(targets, split, seed=0)].tolist())
        for cls, n in per_class.items():
            assert abs(counts[cls] - fraction * n) <= 0.5 + 1e-9


def test_digits_split_is_deterministic_and_seeded():
    targets = data._digits_arrays()[1]
    assert stratified_split(targets, "test", seed=0) == stratified_split(targets, "test", seed=0)
    assert stratified_split(targets, "test", seed=0) != stratified_split(targets, "test", seed=1)
    a, b = digits("test"), digits("test")
    assert a.targets == b.targets and all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a.items, b.items))


def test_digits_labels_and_images():
    test = digits("test")
    assert test.labels == DIGIT_LABELS == tuple("0123456789")
    img, target = test[0]
    assert isinstance(img, Image.Image) and img.mode == "L" and img.size == (8, 8) and 0 <= target <= 9


def test_image_folder_split_here_and_presplit(tmp_path):
    small = digits("train").subset(range(0, 300, 3))  # 100 real digits
    root = small.save_image_folder(tmp_path / "flat")
    parts = {s: image_folder(root, s) for s in data.SPLITS}
    assert all(p.labels == DIGIT_LABELS for p in parts.values())
    assert sum(len(p) for p in parts.values()) == 100
    img, target = parts["test"][0]
    assert img.mode == "L" and img.size == (8, 8)

    for split, part in parts.items():
        part.save_image_folder(tmp_path / "presplit" / split)
    again = image_folder(tmp_path / "presplit", "val")
    assert again.targets == parts["val"].targets


def test_image_folder_errors_are_clear(tmp_path):
    with pytest.raises(FileNotFoundError):
        image_folder(tmp_path / "missing", "train")
    with pytest.raises(ValueError, match="no class sub-folders"):
        image_folder(tmp_path, "train")


def test_augmentation_is_small_seeded_and_keeps_format():
    img = digits("train")[0][0]
    a = augment(img, random.Random(3))
    assert a.size == img.size and a.mode == img.mode
    assert np.array_equal(np.asarray(a), np.asarray(augment(img, random.Random(3))))
    assert any(not np.array_equal(np.asarray(augment(img, random.Random(s))), np.asarray(img)) for s in range(5))
    assert np.array_equal(np.asarray(augment(img, random.Random(0), max_shift=0, max_degrees=0)), np.asarray(img))


def test_training_preprocessing_is_serve_preprocess():
    """One implementation: resfam.data uses the very function the server calls."""
    assert data.preprocess is serve.runtime.preprocess.preprocess
    spec = data.preprocessing(DIGITS_CONFIG)
    assert spec == serve.runtime.preprocess.Preprocessing.from_metadata(DIGITS_CONFIG.to_dict())
    val = digits("val")
    inputs, targets = preprocess_all(val, spec)
    assert inputs.shape == (len(val), 1, 32, 32) and inputs.dtype == np.float32
    assert np.array_equal(inputs[7], serve.runtime.preprocess.preprocess(val[7][0], spec))
    assert targets.tolist() == list(val.targets)
