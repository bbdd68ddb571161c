"""The folder and array data sets: pairing, resizing, normalisation, errors that name the file."""

import numpy as np
import pytest
import torch
from PIL import Image

from octa_tui.trainer.data import (
    ArrayDataset,
    DataError,
    DataPathError,
    FolderDataset,
    compute_pos_weight,
    split_train_val,
    target_stats,
    training_targets,
)
from octa_tui.trainer.synthetic import synthetic_vessels, write_synthetic_folder


@pytest.fixture
def folder(tmp_path):
    return write_synthetic_folder(tmp_path / "ds", 6, size=32, seed=4)


def test_folder_pairs_by_stem_across_formats_and_resizes(tmp_path):
    # GIVEN images as JPG and TIF (one grey) with PNG masks of the same stems, 48x48 on disk
    root = tmp_path / "mixed"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    images, masks = synthetic_vessels(3, size=48, seed=0)
    Image.fromarray(images[0]).save(root / "images" / "a.jpg")
    Image.fromarray(images[1][..., 0]).save(root / "images" / "b.tif")  # grey
    Image.fromarray(images[2]).save(root / "images" / "c.png")
    for stem, mask in zip("abc", masks):
        Image.fromarray(mask).save(root / "masks" / f"{stem}.png")
    # WHEN loaded at 32x32
    ds = FolderDataset(root, size=32)
    # THEN three pairs, RGB float images in [0, 1], masks still binary after the resize
    assert ds.stems == ("a", "b", "c") and len(ds) == 3
    image, target = ds[1]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert 0.0 <= image.min() and image.max() <= 1.0
    assert target.shape == (1, 32, 32)
    assert set(torch.unique(target).tolist()) <= {0.0, 1.0}


def test_normalize_false_gives_raw_0_255_inputs(folder):
    raw, _ = FolderDataset(folder, size=32, normalize=False)[0]
    scaled, _ = FolderDataset(folder, size=32)[0]
    assert raw.max() > 1.5
    torch.testing.assert_close(raw / 255.0, scaled)


def test_binarize_fixes_soft_masks(tmp_path):
    root = write_synthetic_folder(tmp_path / "soft", 4, size=32, seed=1, soft_masks=True)
    soft = FolderDataset(root, size=32)
    fixed = FolderDataset(root, size=32, binarize=True)
    assert len(torch.unique(torch.stack([soft[i][1] for i in range(4)]))) > 2
    assert set(torch.unique(torch.stack([fixed[i][1] for i in range(4)])).tolist()) == {0.0, 1.0}


def test_corrupt_image_error_names_the_file(folder):
    # GIVEN an image file whose bytes are not an image
    (folder / "images" / "0002.png").write_bytes(b"not a png at all")
    # WHEN loading THEN one DataError names the file and says it is unreadable
    with pytest.raises(DataError, match=r"images/0002\.png: unreadable image"):
        FolderDataset(folder, size=32)


def test_truncated_image_is_caught_at_load_time(folder):
    path = folder / "images" / "0001.png"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match=r"images/0001\.png"):
        FolderDataset(folder, size=32)


def test_missing_mask_error_names_the_image(folder):
    (folder / "masks" / "0003.png").unlink()
    with pytest.raises(DataError, match=r"images/0003\.png: no mask"):
        FolderDataset(folder, size=32)


def test_size_mismatch_error_names_both_sizes(folder):
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(folder / "masks" / "0004.png")
    with pytest.raises(DataError, match=r"0004\.png.*32x32.*16x16"):
        FolderDataset(folder, size=32)


def test_skip_bad_leaves_bad_files_out_and_reports_them(folder):
    # GIVEN a corrupt image, a missing mask and a size mismatch among 6 pairs
    (folder / "images" / "0000.png").write_bytes(b"garbage")
    (folder / "masks" / "0001.png").unlink()
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(folder / "masks" / "0002.png")
    # WHEN loading with skip_bad
    ds = FolderDataset(folder, size=32, skip_bad=True)
    # THEN the three good pairs remain and each problem names its file, marked skipped
    assert ds.stems == ("0003", "0004", "0005")
    files = {p.file: p.problem for p in ds.problems}
    assert set(files) == {"images/0000.png", "images/0001.png", "images/0002.png"}
    assert all(problem.endswith("(skipped)") for problem in files.values())


def test_bad_paths_raise_a_path_error(tmp_path):
    with pytest.raises(DataPathError, match="no such folder"):
        FolderDataset(tmp_path / "nope")
    (tmp_path / "half" / "images").mkdir(parents=True)
    with pytest.raises(DataPathError, match="no masks/ folder"):
        FolderDataset(tmp_path / "half")


def test_split_is_seeded_disjoint_and_complete(folder):
    ds = FolderDataset(folder, size=32)
    train, val = split_train_val(ds, val_fraction=0.34, seed=1)
    again_train, _ = split_train_val(ds, val_fraction=0.34, seed=1)
    assert len(train) == 4 and len(val) == 2
    assert set(train.indices).isdisjoint(val.indices)
    assert train.indices == again_train.indices
    assert training_targets(train).shape == (4, 1, 32, 32)


def test_array_dataset_serves_heatmap_targets_as_floats():
    images = np.zeros((2, 16, 16, 3), np.uint8)
    heat = np.random.default_rng(0).random((2, 2, 16, 16)).astype(np.float32)
    image, target = ArrayDataset(images, heat)[1]
    assert image.shape == (3, 16, 16) and target.shape == (2, 16, 16)
    torch.testing.assert_close(target, torch.from_numpy(heat[1]))


def test_array_dataset_rejects_mismatched_arrays():
    with pytest.raises(DataError, match="disagree"):
        ArrayDataset(np.zeros((2, 16, 16, 3), np.uint8), np.zeros((3, 16, 16), np.uint8))


def test_pos_weight_auto_is_background_over_foreground():
    masks = np.zeros((2, 10, 10), np.uint8)
    masks[0, :1] = 255  # 10 foreground pixels of 200
    assert compute_pos_weight(masks) == pytest.approx(19.0)
    with pytest.raises(ValueError, match="no foreground"):
        compute_pos_weight(np.zeros((1, 4, 4), np.uint8))


def test_target_stats_give_the_constant_baseline():
    masks = np.zeros((1, 10, 10), np.uint8)
    masks[0, :1] = 255  # mean 0.1
    mean, mse = target_stats(masks)
    assert mean == pytest.approx(0.1)
    assert mse == pytest.approx(0.1 * 0.9)
