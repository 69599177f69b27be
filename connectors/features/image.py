"""Grid-patch image features: an image split into rows × cols patches, masked by blurring or greying.

Feature ``i`` is the patch in grid row ``i // cols`` and column ``i % cols``, named "r{row}c{col}".
Patch edges are ``round(k * height / rows)`` and ``round(k * width / cols)``. An image example is
an Example whose ``text`` is the image file's path and whose features are the patch names
(``spans`` None). Mask convention: ``keep[i]`` True = patch ``i`` shown as it is.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from connectors.base import Example

Fill = Literal["blur", "grey"]
FILLS: tuple[str, ...] = ("blur", "grey")


def patch_names(rows: int, cols: int) -> list[str]:
    """Feature names of a rows × cols grid, row-major."""
    _check_grid(rows, cols)
    return [f"r{row}c{col}" for row in range(rows) for col in range(cols)]


def patch_labels(height: int, width: int, rows: int, cols: int) -> np.ndarray:
    """int (height, width): the patch index of every pixel."""
    _check_grid(rows, cols)
    if height < rows or width < cols:
        raise ValueError(f"an image of {height}x{width} pixels cannot hold a {rows}x{cols} grid")
    row_edges = np.round(np.arange(rows + 1) * height / rows).astype(int)
    col_edges = np.round(np.arange(cols + 1) * width / cols).astype(int)
    row_of = np.searchsorted(row_edges, np.arange(height), side="right") - 1
    col_of = np.searchsorted(col_edges, np.arange(width), side="right") - 1
    return row_of[:, None] * cols + col_of[None, :]


def image_example(
    example_id: str,
    path: str | Path,
    rows: int,
    cols: int,
    *,
    base_dir: str | Path | None = None,
    question: str | None = None,
    target: str | None = None,
) -> Example:
    """An image example: ``text`` = the absolute image path (a relative one is taken from
    ``base_dir``), features = the patch names. ValueError when the file does not exist."""
    path = Path(path).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if not path.is_file():
        raise ValueError(f"image file {str(path)!r} not found")
    return Example(
        example_id=example_id,
        text=str(path.resolve()),
        features=tuple(patch_names(rows, cols)),
        spans=None,
        question=question,
        target=target,
    )


def load_image(path: str | Path) -> np.ndarray:
    """The image at ``path`` as uint8 RGB (height, width, 3). Needs Pillow."""
    try:
        from PIL import Image
    except ImportError as err:
        raise ImportError("reading image files needs Pillow: pip install pillow") from err
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.uint8)


class PatchMasker:
    """Masked versions of one image; build once per example, call once per mask row.

    ``fill`` "blur": a masked patch shows the image blurred by a Gaussian of ``blur_sigma``
    pixels (None = half the shorter patch side); "grey": a masked patch is the flat ``grey`` level.
    ``image``: uint8 (height, width) or (height, width, channels).
    """

    def __init__(
        self,
        image: np.ndarray,
        rows: int,
        cols: int,
        *,
        fill: Fill = "blur",
        blur_sigma: float | None = None,
        grey: int = 128,
    ) -> None:
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim not in (2, 3):
            raise ValueError(f"image must be uint8 (height, width[, channels]), got {image.dtype} {image.shape}")
        if fill not in FILLS:
            raise ValueError(f"unknown patch fill {fill!r}; expected one of {', '.join(FILLS)}")
        if not 0 <= grey <= 255:
            raise ValueError(f"grey must be a level in [0, 255], got {grey}")
        self.image = image
        self.rows, self.cols = rows, cols
        self.n = rows * cols
        self.labels = patch_labels(image.shape[0], image.shape[1], rows, cols)
        if fill == "grey":
            self.filler = np.full_like(image, grey)
        else:
            from scipy.ndimage import gaussian_filter

            if blur_sigma is None:
                blur_sigma = min(image.shape[0] / rows, image.shape[1] / cols) / 2
            if blur_sigma <= 0:
                raise ValueError(f"blur_sigma must be > 0, got {blur_sigma}")
            sigma = (blur_sigma, blur_sigma) + (0,) * (image.ndim - 2)
            blurred = gaussian_filter(image.astype(np.float32), sigma=sigma, mode="nearest")
            self.filler = np.clip(np.rint(blurred), 0, 255).astype(np.uint8)

    def mask(self, keep: np.ndarray) -> np.ndarray:
        """The image with the patches where ``keep`` (bool (n,)) is False filled."""
        keep = np.asarray(keep)
        if keep.shape != (self.n,):
            raise ValueError(f"keep must have shape ({self.n},), got {keep.shape}")
        if keep.dtype != bool:
            if not np.isin(keep, (0, 1)).all():
                raise ValueError("keep must be boolean or 0/1 valued")
            keep = keep.astype(bool)
        shown = keep[self.labels]
        if self.image.ndim == 3:
            shown = shown[:, :, None]
        return np.where(shown, self.image, self.filler)


def _check_grid(rows: int, cols: int) -> None:
    for name, value in (("rows", rows), ("cols", cols)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
            raise ValueError(f"grid {name} must be a positive integer, got {value!r}")
