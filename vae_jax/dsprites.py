"""dSprites with its ground-truth factors: a TFDS reader and a procedural renderer, one name.

dSprites (Matthey et al. 2017) holds one 2-D sprite per 64x64 binary image, for every
combination of five factors, 737,280 images in all:

    factor        values                              index range
    shape         square, ellipse, heart              0..2
    scale         6 values linearly spaced in [0.5, 1] 0..5
    orientation   40 values linearly spaced in [0, 2 pi] (both ends included) 0..39
    position x    32 values linearly spaced in [0, 1]  0..31
    position y    32 values linearly spaced in [0, 1]  0..31

A factor array holds the indices, int [N, 5] in that order (`FACTOR_NAMES`); `factor_values`
gives the values. The original files vary position y fastest, then position x, orientation,
scale and shape, so image i of the original array has the factors `index_to_factors(i)` and
`factors_to_index` maps back (exact integer arithmetic).

Two sources of the images, behind the data set names `dsprites` (64x64) and `dsprites32`:
- the TFDS `dsprites` data set, when it is prepared in the TFDS data dir (`input.data_dir`,
  else `$TFDS_DATA_DIR`, else `~/tensorflow_datasets`; prepare it with `tfds build dsprites`
  on a machine with TensorFlow and internet). TFDS stores the records in its own shuffled
  order with the factor indices as the features `label_shape`, `label_scale`,
  `label_orientation`, `label_x_position`, `label_y_position`; `read_tfds` puts them back in
  the original order. Reading all 737,280 records takes a few minutes and 3 GB of memory.
- otherwise, `images_from_factors`: a procedural renderer in this module. It draws the same
  factor grid, but it is not the original artwork, so numbers computed on it (metrics,
  likelihoods) are not bit-comparable to numbers computed on the original files:
  * a pixel is on when its centre lies inside the shape (no anti-aliasing, no supersampling);
  * the square has side 20 * scale pixels; the ellipse has semi-axes 10 * scale and
    5 * scale pixels (long axis horizontal at orientation 0); the heart is the algebraic curve
    (x^2 + y^2 - 1)^3 = x^2 y^3 scaled to a similar size (its outline differs from the
    original's hand-drawn heart);
  * the sprite's centre sits at pixel coordinate 16 + 31 * position (x: column, y: row, both
    from the top left; pixel edges at integers), so one position step is exactly one pixel and
    images that differ only in position are exact translates of each other;
  * orientation rotates the sprite by that angle, counter-clockwise as displayed; the angle
    is reduced modulo 2 pi first, so orientations 0 and 2 pi give the same image (as in the
    original, where they also coincide).
  `dsprites32` renders at 32x32: each 2x2 block of the 64x64 image, on when at least 2 of its 4
  pixels are (so it stays binary). With the TFDS source it is the same downsampling of the
  original images.

The metrics (`vae_jax.disentanglement`) call `sample_factors(key, n)` and
`images_from_factors(factors)`.

References: Matthey, Higgins, Hassabis & Lerchner (2017), dSprites: Disentanglement testing
Sprites dataset, https://github.com/deepmind/dsprites-dataset.
"""

from __future__ import annotations

import functools

import jax
import numpy as np

from vae_jax import data_sources

FACTOR_NAMES = ('shape', 'scale', 'orientation', 'position_x', 'position_y')
FACTOR_SIZES = (3, 6, 40, 32, 32)
NUM_IMAGES = int(np.prod(FACTOR_SIZES))  # 737,280
SHAPE_NAMES = ('square', 'ellipse', 'heart')
# TFDS `dsprites` feature holding each factor's index, in FACTOR_NAMES order.
TFDS_FEATURES = (
    'label_shape',
    'label_scale',
    'label_orientation',
    'label_x_position',
    'label_y_position',
)
SIZES = (64, 32)  # Image side of `images_from_factors(size=...)`.
# Data set names of vae_jax.data: name -> image side.
DATASET_SIZES = {'dsprites': 64, 'dsprites32': 32}

# Renderer geometry, in pixels of the 64x64 image (module docstring).
_HALF_SIDE = 10.0  # square half side, ellipse long semi-axis, at scale 1
_ELLIPSE_ASPECT = 0.5  # short / long semi-axis
_HEART_ZOOM = 1.15  # sprite units -> heart-curve units (the curve spans x in +-1.14)
_HEART_LIFT = 0.118  # centres the curve's y range [-1, 1.236] on 0
_CENTRE_OFFSET = 16  # centre at position 0; the sprite reaches at most 14.2 px from it
_STRIDES = tuple(int(np.prod(FACTOR_SIZES[i + 1 :])) for i in range(len(FACTOR_SIZES)))


def factor_values(factors: np.ndarray) -> np.ndarray:
    """The factor values of factor indices.

    Args:
      factors: int [N, 5] indices (shape, scale, orientation, position_x, position_y).

    Returns:
      float64 [N, 5]: shape as 1, 2, 3 (the original's values), scale in [0.5, 1], orientation
      in [0, 2 pi], positions in [0, 1].
    """
    factors = check_factors(factors)
    grids = (
        np.arange(1.0, 4.0),
        np.linspace(0.5, 1.0, 6),
        np.linspace(0.0, 2 * np.pi, 40),
        np.linspace(0.0, 1.0, 32),
        np.linspace(0.0, 1.0, 32),
    )
    return np.stack([grid[factors[:, i]] for i, grid in enumerate(grids)], axis=-1)


def check_factors(factors) -> np.ndarray:
    """Returns `factors` as int64 [N, 5] after checking shape and ranges.

    Raises:
      ValueError: not [N, 5] integers, or an index outside its factor's range.
    """
    factors = np.asarray(factors)
    if factors.ndim != 2 or factors.shape[1] != len(FACTOR_SIZES):
        raise ValueError(f'dsprites: factors must be int [N, 5], got shape {factors.shape}.')
    if not np.issubdtype(factors.dtype, np.integer):
        raise ValueError(f'dsprites: factors must be integer indices, got dtype {factors.dtype}.')
    factors = factors.astype(np.int64)
    bad = (factors < 0) | (factors >= np.asarray(FACTOR_SIZES))
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(
            f'dsprites: factors[{row}, {col}] ({FACTOR_NAMES[col]}) = {factors[row, col]}; '
            f'allowed: 0..{FACTOR_SIZES[col] - 1}.'
        )
    return factors


def factors_to_index(factors) -> np.ndarray:
    """Position in the original files of each factor combination: int [N, 5] -> int64 [N]."""
    return check_factors(factors) @ np.asarray(_STRIDES, np.int64)


def index_to_factors(index) -> np.ndarray:
    """Factor indices of positions in the original files: int [N] -> int64 [N, 5].

    Raises:
      ValueError: an index outside [0, 737280).
    """
    index = np.asarray(index, np.int64)
    if index.ndim != 1 or (index < 0).any() or (index >= NUM_IMAGES).any():
        raise ValueError(f'dsprites: indices must be int [N] in [0, {NUM_IMAGES}).')
    return np.stack(
        [(index // s) % n for s, n in zip(_STRIDES, FACTOR_SIZES, strict=True)], axis=-1
    )


def sample_factors(key: jax.Array, n: int) -> np.ndarray:
    """n factor combinations drawn independently and uniformly (each factor uniform).

    Args:
      key: a JAX PRNG key.
      n: how many.

    Returns:
      int64 [n, 5] indices.
    """
    keys = jax.random.split(key, len(FACTOR_SIZES))
    columns = [
        jax.random.randint(k, (n,), 0, size) for k, size in zip(keys, FACTOR_SIZES, strict=True)
    ]
    return np.stack([np.asarray(c, np.int64) for c in columns], axis=-1)


def images_from_factors(factors, *, size: int = 64) -> np.ndarray:
    """Renders the procedural dSprites images of factor combinations (module docstring).

    Vectorised: the 720 (shape, scale, orientation) sprites are drawn once per process and each
    image is a translate of one of them.

    Args:
      factors: int [N, 5] indices.
      size: 64, or 32 for the 2x2-downsampled images.

    Returns:
      float32 [N, size, size, 1] in {0, 1}.

    Raises:
      ValueError: bad factors or size.
    """
    factors = check_factors(factors)
    if size not in SIZES:
        raise ValueError(f'dsprites: size={size!r} is not supported; allowed: 64, 32.')
    sprites = _sprite_library()  # [3, 6, 40, 96, 96] uint8, centre at 16 + 32 = 48
    # Every 64x64 window of every sprite, as a view [3, 6, 40, 33, 33, 64, 64]: the window at
    # (32 - k_y, 32 - k_x) is the sprite with its centre moved k pixels from 16.
    windows = np.lib.stride_tricks.sliding_window_view(sprites, (64, 64), axis=(3, 4))
    images = windows[
        factors[:, 0], factors[:, 1], factors[:, 2], 32 - factors[:, 4], 32 - factors[:, 3]
    ]
    if size == 32:
        return downsample(images[..., None])
    return images[..., None].astype(np.float32)


def downsample(images: np.ndarray) -> np.ndarray:
    """64x64 -> 32x32 binary: a pixel is on when at least 2 of its 2x2 block are.

    Args:
      images: [N, 64, 64, 1] in {0, 1} (any dtype).

    Returns:
      float32 [N, 32, 32, 1] in {0, 1}.
    """
    n = images.shape[0]
    images = np.asarray(images)
    blocks = images.reshape(n, 32, 2, 32, 2, 1).sum(axis=(2, 4), dtype=np.uint8)
    return (blocks >= 2).astype(np.float32)


@functools.lru_cache(maxsize=1)
def _sprite_library() -> np.ndarray:
    """uint8 [3, 6, 40, 96, 96]: every (shape, scale, orientation) sprite centred at (48, 48).

    96 = 64 + 32 rows/cols: the 32 leading zero rows/cols let a translate read past the image's
    top-left edge (sprites never reach it: their extent is at most 14.2 px from the centre).
    """
    values = factor_values(_grid_factors())
    centre = _CENTRE_OFFSET + 32
    coords = np.arange(96) + 0.5 - centre  # pixel centres relative to the sprite centre
    dy, dx = coords[:, None], coords[None, :]
    out = np.empty((len(values), 96, 96), np.uint8)
    for i, (shape, scale, angle) in enumerate(values[:, :3]):
        angle = np.mod(angle, 2 * np.pi)  # orientations 0 and 2 pi: the same sprite
        cos, sin = np.cos(angle), np.sin(angle)
        # Rows grow downwards, so a counter-clockwise turn as displayed is a clockwise one in
        # (x, y); sample the sprite frame at the inverse rotation of each pixel centre.
        u = (cos * dx - sin * dy) / (_HALF_SIDE * scale)
        v = (sin * dx + cos * dy) / (_HALF_SIDE * scale)
        out[i] = _inside(int(shape) - 1, u, v)
    return out.reshape(*FACTOR_SIZES[:3], 96, 96)


def _grid_factors() -> np.ndarray:
    """int64 [720, 5]: every (shape, scale, orientation) with positions 0, in C order."""
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in FACTOR_SIZES[:3]], indexing='ij'), -1)
    grid = grid.reshape(-1, 3)
    return np.concatenate([grid, np.zeros((len(grid), 2), np.int64)], axis=-1).astype(np.int64)


def _inside(shape: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Whether sprite-frame points (u right, v down; 1 = the half side at scale 1) are inside."""
    if shape == 0:
        return (np.abs(u) <= 1) & (np.abs(v) <= 1)
    if shape == 1:
        return u**2 + (v / _ELLIPSE_ASPECT) ** 2 <= 1
    x, y = _HEART_ZOOM * u, -_HEART_ZOOM * v + _HEART_LIFT  # the curve's y points up
    return (x**2 + y**2 - 1) ** 3 - x**2 * y**3 <= 0


def read_tfds(data_dir: str, *, size: int = 64) -> np.ndarray:
    """All 737,280 images of the prepared TFDS `dsprites` set, in the original order.

    Args:
      data_dir: a TFDS data dir (`data_sources.resolve_data_dir`).
      size: 64, or 32 for `downsample`d images.

    Returns:
      uint8 [737280, size, size, 1] in {0, 1}; image i has the factors `index_to_factors(i)`.

    Raises:
      FileNotFoundError: `dsprites` is not prepared in `data_dir`.
      ValueError: records that do not cover every factor combination exactly once.
    """
    import tensorflow_datasets as tfds  # Imported here: the renderer does not need it.

    builder = data_sources.tfds_builder('dsprites', data_dir)
    if not builder.is_prepared():
        raise FileNotFoundError(data_sources.not_prepared_message('dsprites', builder, data_dir))
    source = tfds.data_source('dsprites', split='train', data_dir=data_dir, download=False)
    return _from_records(source, size=size)


def is_prepared(data_dir: str) -> bool:
    """Whether the TFDS `dsprites` set is prepared in `data_dir` (False if TFDS is absent)."""
    try:
        return data_sources.tfds_builder('dsprites', data_dir).is_prepared()
    except (ImportError, ValueError):
        return False


def _index_and_images(records, *, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Records with `image` [64, 64, 1] and TFDS_FEATURES -> (int64 [R] positions in the
    original order, uint8 [R, size, size, 1] images in {0, 1})."""
    factors = np.array([[int(r[f]) for f in TFDS_FEATURES] for r in records], np.int64)
    images = np.stack([np.asarray(r['image']) for r in records])
    images = np.minimum(images, 1).astype(np.uint8)  # stored as 0/1; 0/255 copies read the same
    if size == 32:
        images = downsample(images).astype(np.uint8)
    return factors_to_index(factors), images


def _from_records(source, *, size: int = 64, chunk: int = 10_000) -> np.ndarray:
    """Records with `image` [64, 64, 1] and TFDS_FEATURES, in any order -> the original order.

    Args:
      source: a sequence of records (len, and `__getitems__` or indexing).
      size: 64 or 32.
      chunk: records per batched read.

    Returns:
      uint8 [737280, size, size, 1].
    """
    if len(source) != NUM_IMAGES:
        raise ValueError(
            f'dsprites: the TFDS source has {len(source)} records; dSprites has {NUM_IMAGES}.'
        )
    out = np.zeros((NUM_IMAGES, size, size, 1), np.uint8)
    seen = np.zeros(NUM_IMAGES, bool)
    getitems = getattr(source, '__getitems__', None)
    for start in range(0, NUM_IMAGES, chunk):
        ids = list(range(start, min(start + chunk, NUM_IMAGES)))
        records = getitems(ids) if getitems else [source[i] for i in ids]
        index, images = _index_and_images(records, size=size)
        out[index] = images
        seen[index] = True
    if not seen.all():
        missing = index_to_factors(np.flatnonzero(~seen)[:1])[0]
        raise ValueError(
            f'dsprites: the TFDS records miss {np.sum(~seen)} factor combinations (e.g. '
            f'{dict(zip(FACTOR_NAMES, missing.tolist(), strict=True))}); the set is damaged.'
        )
    return out


DEFAULT_NUM_TEST = 10_000
_SPLIT_SEED = 0  # the fixed permutation that splits the 737,280 combinations


def load_splits(
    name: str, limits: dict[str, int | None], data_dir: str
) -> dict[str, dict[str, np.ndarray]]:
    """The train and test splits of `dsprites` / `dsprites32` for vae_jax.data.

    dSprites has no test split: a fixed permutation (seed 0) of the 737,280 combinations gives
    the test split first (`num_test_examples`, default 10,000) and the train split next
    (`num_train_examples`, default all the remaining 727,280), so the two never overlap and the
    test split does not change with the train split's size. Memory: the whole train split is
    3 GB of uint8 at 64x64 and 12 GB once scaled to float32 (a quarter of that for
    `dsprites32`), so runs on this kind of machine set `input.num_train_examples` (the
    disentanglement configs use 100,000).

    Images come from the TFDS `dsprites` set when it is prepared in `data_dir`, else from the
    renderer (`source(data_dir)` says which; module docstring for how they differ).

    Args:
      name: 'dsprites' or 'dsprites32'.
      limits: {'train': N or None, 'test': N or None}.
      data_dir: a TFDS data dir.

    Returns:
      {'train': ..., 'test': ...}, each {'image': uint8 [N, S, S, 1] in {0, 1}, 'label': int64
      [N] (the shape, 0..2), 'factors': int32 [N, 5]}.

    Raises:
      ValueError: the two splits together exceed 737,280.
    """
    size = DATASET_SIZES[name]
    num_test = DEFAULT_NUM_TEST if limits['test'] is None else limits['test']
    num_train = NUM_IMAGES - num_test if limits['train'] is None else limits['train']
    if num_train + num_test > NUM_IMAGES:
        raise ValueError(
            f'input.num_train_examples={num_train} + input.num_test_examples={num_test} exceeds '
            f'the {NUM_IMAGES} images of {name!r} (the two splits are disjoint).'
        )
    order = np.random.default_rng(_SPLIT_SEED).permutation(NUM_IMAGES)
    index = {'test': order[:num_test], 'train': order[num_test : num_test + num_train]}
    stored = read_tfds(data_dir, size=size) if source(data_dir) == 'tfds' else None
    out = {}
    for split, idx in index.items():
        factors = index_to_factors(idx)
        if stored is not None:
            image = stored[idx]
        else:
            image = images_from_factors(factors, size=size).astype(np.uint8)
        out[split] = {'image': image, 'label': factors[:, 0], 'factors': factors.astype(np.int32)}
    return out


def source(data_dir: str) -> str:
    """'tfds' when the TFDS `dsprites` set is prepared in `data_dir`, else 'renderer'."""
    return 'tfds' if is_prepared(data_dir) else 'renderer'
