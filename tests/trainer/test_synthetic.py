"""Synthetic data: binary masks at a normal foreground, the seed's data faults, determinism by seed."""

import numpy as np
import pytest
from PIL import Image

from octa_tui.trainer.synthetic import synthetic_heatmaps, synthetic_vessels, write_synthetic_folder


def test_vessel_masks_are_binary_with_a_normal_foreground():
    # GIVEN the default generator WHEN drawing 64 images
    images, masks = synthetic_vessels(64, size=64, seed=3)
    # THEN images are RGB uint8, masks hold exactly {0, 255}, and vessels cover 5-25% per image
    assert images.shape == (64, 64, 64, 3) and images.dtype == np.uint8
    assert masks.shape == (64, 64, 64) and masks.dtype == np.uint8
    assert set(np.unique(masks).tolist()) == {0, 255}
    ratio = (masks > 127).mean(axis=(1, 2))
    assert 0.08 <= ratio.mean() <= 0.25
    assert ratio.min() > 0.02


def test_vessels_are_brighter_than_background():
    images, masks = synthetic_vessels(16, seed=1)
    grey = images[..., 0].astype(float)
    assert grey[masks > 0].mean() > grey[masks == 0].mean() + 60


def test_soft_masks_have_many_grey_levels_that_threshold_back_to_vessels():
    # GIVEN the soft-masks fault
    _, binary = synthetic_vessels(32, seed=5)
    _, soft = synthetic_vessels(32, seed=5, soft_masks=True)
    # THEN the masks carry many grey levels, and binarising at 127 (the seed's fix) gives back
    # the binary masks of the same seed
    assert len(np.unique(soft)) > 100
    assert np.array_equal(soft > 127, binary > 127)


def test_low_foreground_is_about_one_percent():
    _, masks = synthetic_vessels(64, seed=2, foreground="low")
    ratio = (masks > 127).mean(axis=(1, 2))
    assert 0.005 <= ratio.mean() <= 0.015
    assert ratio.max() < 0.02


def test_same_seed_same_data_different_seed_different_data():
    a_images, a_masks = synthetic_vessels(8, seed=7)
    b_images, b_masks = synthetic_vessels(8, seed=7)
    c_images, c_masks = synthetic_vessels(8, seed=8)
    assert np.array_equal(a_images, b_images) and np.array_equal(a_masks, b_masks)
    assert not np.array_equal(a_masks, c_masks)


def test_other_sizes_and_bad_arguments():
    images, masks = synthetic_vessels(3, size=96, seed=0)
    assert images.shape == (3, 96, 96, 3) and masks.shape == (3, 96, 96)
    with pytest.raises(ValueError, match="foreground"):
        synthetic_vessels(2, foreground="tiny")
    with pytest.raises(ValueError, match="positive"):
        synthetic_vessels(0)


def test_heatmaps_have_a_blob_per_character_and_affinity_between_them():
    # GIVEN text-like images WHEN generated THEN both heatmaps are float32 in [0, 1] and peak near 1
    images, region, affinity = synthetic_heatmaps(16, size=64, seed=0)
    assert images.shape == (16, 64, 64, 3) and images.dtype == np.uint8
    for heat in (region, affinity):
        assert heat.shape == (16, 64, 64) and heat.dtype == np.float32
        assert heat.min() >= 0.0 and heat.max() <= 1.0
    assert (region.max(axis=(1, 2)) > 0.9).all()
    assert (affinity.max(axis=(1, 2)) > 0.9).all()
    # the text (dark ink) sits where the region map is high
    grey = images.mean(axis=-1)
    assert grey[region > 0.5].mean() < grey[region < 0.05].mean() - 20
    again = synthetic_heatmaps(16, size=64, seed=0)
    assert np.array_equal(again[1], region)


def test_write_synthetic_folder_pairs_images_and_masks(tmp_path):
    root = write_synthetic_folder(tmp_path / "ds", 3, size=32, seed=1, soft_masks=True)
    images = sorted(p.name for p in (root / "images").iterdir())
    masks = sorted(p.name for p in (root / "masks").iterdir())
    assert images == masks == ["0000.png", "0001.png", "0002.png"]
    assert len(np.unique(np.asarray(Image.open(root / "masks" / "0000.png")))) > 2


def test_lower_contrast_makes_fainter_vessels_on_the_same_tree():
    # GIVEN the same seed at full and at a third of the contrast
    bright, masks = synthetic_vessels(16, seed=6)
    faint, same_masks = synthetic_vessels(16, seed=6, contrast=0.33)
    # THEN the vessel tree is the same but it stands out much less from the background
    assert np.array_equal(masks, same_masks)

    def gap(images):
        grey = images[..., 0].astype(float)
        return grey[masks > 0].mean() - grey[masks == 0].mean()

    assert gap(faint) < 0.5 * gap(bright)
