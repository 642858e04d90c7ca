"""Images as vae_jax holds them in memory: as stored, one byte a pixel (uint8 or bool).

`data.get_datasets` keeps images as their source stores them (uint8 0..max_value, or bool); the
jitted step scales each gathered batch (vae_jax/input_transform.py). Two things happen to whole
splits on the host, here, without a float32 copy of the split:
- `binarize_static`: `input.binarize='static'`, one Bernoulli(pixel / max_value) draw per pixel
  with a fixed seed, held as bool; drawn in blocks, with the same result as one draw.
- `check_support`: whether the images the model will see (stored / max_value) lie in the
  likelihood's support, with `distributions.check_support`'s message.
"""

from __future__ import annotations

import numpy as np

from vae_jax import distributions

# Images per block: bounds the float32 temporaries of a whole-split operation.
BLOCK = 4096


def binarize_static(image: np.ndarray, *, seed: int, max_value: int = 1) -> np.ndarray:
    """One Bernoulli(pixel / max_value) draw per pixel with a fixed numpy seed.

    The first n images get the same draw whatever the number of images (C-order fill). The
    images are scaled and compared in blocks of `BLOCK`, so the float32 temporaries stay small;
    the generator fills block after block from one stream, so the draw is that of one call.

    Args:
      image: [N, H, W, C] stored values 0..max_value (uint8, or float in [0, 1] with
        max_value 1).
      seed: int seed of `np.random.default_rng`.
      max_value: the stored value of a white pixel.

    Returns:
      bool [N, H, W, C]: uniform < image / max_value, uniform ~ U[0, 1) float32.
    """
    rng = np.random.default_rng(seed)
    out = np.empty(image.shape, np.bool_)
    for start in range(0, len(image), BLOCK):
        block = image[start : start + BLOCK].astype(np.float32) / np.float32(max_value)
        out[start : start + BLOCK] = rng.random(block.shape, dtype=np.float32) < block
    return out


def check_support(likelihood: str, image: np.ndarray, max_value: int) -> None:
    """`distributions.check_support` of the model's input, `image / max_value`, from storage.

    bool data are 0/1, in every likelihood's support. uint8 data scaled by 1/max_value lie in
    [0, 1], so only 'bernoulli' ({0, 1}) can fail; the check reads the stored values' histogram
    and, on failure, the first block holding a bad value, and gives the message
    `check_support` gives for the float values (count, range, first such value in C order).
    float32 data are checked as they are.

    Args:
      likelihood: `model.likelihood`.
      image: [N, ...] stored images (uint8, bool or float32).
      max_value: the stored value of a white pixel (uint8).

    Raises:
      ValueError: data outside the support, or an unknown likelihood.
    """
    if image.dtype != np.uint8 or likelihood != 'bernoulli':
        # Checks the name too (an empty array passes any known likelihood).
        distributions.check_support(likelihood, image if image.dtype == np.float32 else image[:0])
        return
    counts = np.bincount(image.reshape(-1), minlength=256)
    levels = np.flatnonzero(counts)
    bad_levels = [v for v in levels if v not in (0, max_value)]
    if not bad_levels:
        return
    flat = image.reshape(len(image), -1)
    for start in range(0, len(image), BLOCK):
        block = flat[start : start + BLOCK]
        bad = np.isin(block, bad_levels)
        if bad.any():
            first = block[bad][0]
            break
    scaled = np.array([levels[0], levels[-1], first]).astype(np.float32) / np.float32(max_value)
    num_bad = int(counts[bad_levels].sum())
    raise ValueError(distributions.bernoulli_support_message(num_bad, *scaled))
