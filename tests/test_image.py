import numpy as np
import pytest

from connectors.features.image import PatchMasker, image_example, load_image, patch_labels, patch_names


def _image(height=30, width=40, channels=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)


def test_patches_tile_the_image_row_major():
    labels = patch_labels(7, 10, 2, 3)
    assert labels.shape == (7, 10)
    assert labels[0, 0] == 0 and labels[0, -1] == 2 and labels[-1, 0] == 3 and labels[-1, -1] == 5
    # edges at round(k * size / count): rows split 0|4|7 (3.5 rounds to 4), columns 0|3|7|10
    assert (labels[:4, :3] == 0).all() and (labels[4:, 3:7] == 4).all() and (labels[:4, 7:] == 2).all()
    assert np.bincount(labels.ravel()).tolist() == [12, 16, 12, 9, 12, 9]
    assert patch_names(2, 3) == ["r0c0", "r0c1", "r0c2", "r1c0", "r1c1", "r1c2"]


@pytest.mark.parametrize("rows, cols", [(0, 2), (2, -1), (1.5, 2), (True, 2)])
def test_bad_grids_are_refused(rows, cols):
    with pytest.raises(ValueError, match="grid"):
        patch_names(rows, cols)


def test_an_image_smaller_than_the_grid_is_refused():
    with pytest.raises(ValueError, match="cannot hold"):
        patch_labels(3, 30, 4, 4)


def test_grey_fill_greys_exactly_the_masked_patches():
    image = _image()
    masker = PatchMasker(image, 3, 4, fill="grey", grey=100)
    keep = np.ones(12, dtype=bool)
    keep[[0, 5, 11]] = False
    masked = masker.mask(keep)
    labels = patch_labels(30, 40, 3, 4)
    hidden = np.isin(labels, [0, 5, 11])
    assert (masked[hidden] == 100).all()
    np.testing.assert_array_equal(masked[~hidden], image[~hidden])
    np.testing.assert_array_equal(masker.mask(np.ones(12, dtype=bool)), image)
    assert masked.dtype == np.uint8 and masked.shape == image.shape


def test_blur_fill_smooths_the_masked_patches_only():
    image = _image(40, 40)
    masker = PatchMasker(image, 2, 2, fill="blur")
    keep = np.array([False, True, True, True])
    masked = masker.mask(keep)
    top_left = masked[:20, :20].astype(float)
    np.testing.assert_array_equal(masked[20:], image[20:])
    np.testing.assert_array_equal(masked[:20, 20:], image[:20, 20:])
    # a blur of noise keeps the mean and loses most of the variance
    assert abs(top_left.mean() - image[:20, :20].mean()) < 8
    assert top_left.std() < 0.3 * image[:20, :20].astype(float).std()
    none_kept = masker.mask(np.zeros(4, dtype=bool))
    np.testing.assert_array_equal(none_kept, masker.filler)


def test_grayscale_images_and_mask_validation():
    image = _image(channels=1)[:, :, 0]
    masker = PatchMasker(image, 2, 2, fill="blur", blur_sigma=2.0)
    assert masker.mask([1, 0, 1, 0]).shape == image.shape
    with pytest.raises(ValueError, match="shape"):
        masker.mask(np.ones(3, dtype=bool))
    with pytest.raises(ValueError, match="0/1"):
        masker.mask([2, 0, 1, 0])
    with pytest.raises(ValueError, match="uint8"):
        PatchMasker(image.astype(float), 2, 2)
    with pytest.raises(ValueError, match="fill"):
        PatchMasker(image, 2, 2, fill="remove")
    with pytest.raises(ValueError, match="blur_sigma"):
        PatchMasker(image, 2, 2, blur_sigma=0)


def test_image_examples_name_the_file_and_the_patches(tmp_path):
    (tmp_path / "cat.png").write_bytes(b"not read here")
    example = image_example("img-1", "cat.png", 2, 2, base_dir=tmp_path, question="What animal is this?")
    assert example.text == str((tmp_path / "cat.png").resolve())
    assert example.features == ("r0c0", "r0c1", "r1c0", "r1c1") and example.spans is None
    assert example.question == "What animal is this?"
    with pytest.raises(ValueError, match="not found"):
        image_example("img-2", "dog.png", 2, 2, base_dir=tmp_path)


def test_load_image_reads_rgb(tmp_path):
    image_module = pytest.importorskip("PIL.Image")
    pixels = _image(12, 16)
    image_module.fromarray(pixels).save(tmp_path / "noise.png")
    image_module.fromarray(pixels[:, :, 0]).save(tmp_path / "grey.png")
    np.testing.assert_array_equal(load_image(tmp_path / "noise.png"), pixels)
    grey = load_image(tmp_path / "grey.png")
    assert grey.shape == (12, 16, 3) and (grey[:, :, 0] == pixels[:, :, 0]).all()
