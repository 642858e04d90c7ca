"""Data sets as numpy arrays: TFDS images, the embedded `digits`, and toy 2-D sets.

`get_datasets(config.input)` returns `(train, test)`, each `{'image': float32 [N, *data_shape],
'label': int32 [N]}`, held in host memory; the trainer puts them on the device once.

Data sets (`input.dataset`):
- `mnist`, `fashion_mnist` (60k/10k, 28x28x1, labels 0..9) and `binarized_mnist` (Larochelle &
  Murray's fixed binarisation, 50k/10k, no labels) read from a prepared TFDS data dir with
  `tfds.data_source(..., download=False)` (`array_record` files, no TensorFlow needed). The train
  split is TFDS's `train` (for binarized_mnist the 50k train images only, as in the IWAE paper;
  its 10k `validation` split is not used). Records come in TFDS's order, which TFDS shuffled once
  when the data set was prepared (deterministic, but not the order of the original files).
- `digits`: scikit-learn's bundled 8x8 digits (1797 images, values 0..16 scaled to [0, 1]), split
  into train/test by a fixed stratified 80/20 split.
- Toy 2-D sets (data shape `(2,)`, points unscaled), `input.toy_num_examples` points per split,
  train and test drawn with different fixed seeds:
  `eight_gaussians`: equal mixture of 8 Gaussians centred on a radius-5 circle at angles
  2*pi*k/8, isotropic std `input.toy_noise`; label = component k.
  `two_moons`: `sklearn.datasets.make_moons` without noise, scaled by 2 and centred on the
  origin (x in [-3, 3], y in [-1.5, 1.5]), plus isotropic Gaussian noise of std
  `input.toy_noise` (the default 0.2 equals FFJORD's moons: noise 0.1 before the x2 scale);
  label = moon.
  `pinwheel`: Johnson et al. (2016) / FFJORD's 5-armed pinwheel (radial std 0.3, tangential
  std 0.1, rate 0.25, times 2); label = arm. Fixed definition: `toy_noise` does not apply.
  `checkerboard`: FFJORD's checkerboard, uniform on the 8 "black" 2x2 squares of [-4, 4]^2;
  label 0. Fixed definition: `toy_noise` does not apply.

Preprocessing, in this order: truncate (`num_train_examples`, `num_test_examples`), scale to
[0, 1], binarise (`binarize='static'`: one Bernoulli(pixel) draw per pixel with a fixed seed per
split; `'dynamic'` leaves grey values here because the jitted step draws a fresh binarisation at
every use), zero-pad to 32x32 (`pad_to_32`, centred). Data are the same for every `config.seed`,
so runs with different seeds see the same examples.

References: LeCun et al. (1998) MNIST; Xiao et al. (2017) Fashion-MNIST; Larochelle & Murray
(2011) binarized MNIST; Burda et al. (2016) IWAE splits; Johnson et al. (2016) and Grathwohl et
al. (2019, FFJORD) toy 2-D sets.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any

import numpy as np

TFDS_DATASETS = ('mnist', 'fashion_mnist', 'binarized_mnist')
EMBEDDED_DATASETS = ('digits',)
TOY_DATASETS = ('eight_gaussians', 'two_moons', 'pinwheel', 'checkerboard')
DATASETS = TFDS_DATASETS + EMBEDDED_DATASETS + TOY_DATASETS
BINARIZE_MODES = ('none', 'static', 'dynamic')

# num_classes: labels are in [0, num_classes); has_labels False means every label is 0.
_INFO = {
    'mnist': dict(num_classes=10, is_image=True, has_labels=True, shape=(28, 28, 1)),
    'fashion_mnist': dict(num_classes=10, is_image=True, has_labels=True, shape=(28, 28, 1)),
    'binarized_mnist': dict(num_classes=1, is_image=True, has_labels=False, shape=(28, 28, 1)),
    'digits': dict(num_classes=10, is_image=True, has_labels=True, shape=(8, 8, 1)),
    'eight_gaussians': dict(num_classes=8, is_image=False, has_labels=True, shape=(2,)),
    'two_moons': dict(num_classes=2, is_image=False, has_labels=True, shape=(2,)),
    'pinwheel': dict(num_classes=5, is_image=False, has_labels=True, shape=(2,)),
    'checkerboard': dict(num_classes=1, is_image=False, has_labels=False, shape=(2,)),
}
# Stored pixel value that means "white": TFDS binarized_mnist stores 0/1, the others 0..255.
_TFDS_MAX_VALUE = {'mnist': 255, 'fashion_mnist': 255, 'binarized_mnist': 1}
_SPLITS = ('train', 'test')
# Fixed seeds: the data never depend on config.seed (see the module docstring).
_STATIC_BINARIZE_SEED = {'train': 0, 'test': 1}
_TOY_SEED = {'train': 0, 'test': 1}
_DIGITS_SPLIT_SEED = 0
_DIGITS_TEST_FRACTION = 0.2
_READ_CHUNK = 10_000  # records per batched read: bounds the list of decoded dicts held at once.
EIGHT_GAUSSIANS_RADIUS = 5.0
_MOONS_SCALE = 2.0
_MOONS_CENTRE = np.array([0.5, 0.25])  # Centre of make_moons' bounding box [-1, 2] x [-0.5, 1].
# Pinwheel (FFJORD's constants): features (r, t) ~ N((1, 0), diag(0.3, 0.1)^2), arm k uniform.
_PINWHEEL_RADIAL_MEAN = 1.0
_PINWHEEL_RADIAL_STD = 0.3
_PINWHEEL_TANGENTIAL_STD = 0.1
_PINWHEEL_NUM_ARMS = 5
_PINWHEEL_RATE = 0.25
_PINWHEEL_SCALE = 2.0
# Angles on which the pinwheel density's preimages are bracketed, and bisection steps per root.
_PINWHEEL_GRID = 1024
_PINWHEEL_BISECTIONS = 40


def dataset_info(name: str) -> dict[str, Any]:
    """Static facts about a data set (no data are read).

    Args:
      name: one of `DATASETS`.

    Returns:
      `{'num_classes': int, 'is_image': bool, 'has_labels': bool}`; labels lie in
      [0, num_classes); a set without labels has num_classes 1 and all labels 0.

    Raises:
      ValueError: unknown name.
    """
    _check_name(name)
    return {k: v for k, v in _INFO[name].items() if k != 'shape'}


def data_shape(input_config) -> tuple[int, ...]:
    """Shape of one example after preprocessing, without reading any data.

    Args:
      input_config: the `config.input` ConfigDict (keys as in configs/default.py).

    Returns:
      `(H, W, C)` for images (`(32, 32, C)` with `pad_to_32`), `(2,)` for toy sets.

    Raises:
      ValueError: a bad config value (see `validate_config`).
    """
    validate_config(input_config)
    shape = _INFO[input_config.dataset]['shape']
    if input_config.pad_to_32:
        shape = (32, 32, shape[-1])
    return shape


def value_grid(input_config) -> dict[str, Any]:
    """The values the evaluated pixels take, for bits/dim (no data are read).

    Args:
      input_config: the `config.input` ConfigDict.

    Returns:
      {'num_levels': equally spaced values in [0, 1] a pixel takes (2 for binary data:
       binarized_mnist or binarize='static'/'dynamic', which evaluates on binarised draws; 256
       for mnist and fashion_mnist, k/255; 17 for digits, k/16), or None for the real-valued toy
       sets; 'num_dims': values per example before padding (784 for a 28x28 image, 2 for toy
       sets); 'num_padding_dims': the zeros `pad_to_32` adds per example (0 without it)}.

    Raises:
      ValueError: a bad config value (see `validate_config`).
    """
    real_shape = _INFO[input_config.dataset]['shape']
    num_dims = math.prod(real_shape)
    padding = math.prod(data_shape(input_config)) - num_dims
    name = input_config.dataset
    if not _INFO[name]['is_image']:
        levels = None
    elif input_config.binarize != 'none' or name == 'binarized_mnist':
        levels = 2
    else:
        levels = (16 if name == 'digits' else _TFDS_MAX_VALUE[name]) + 1
    return {'num_levels': levels, 'num_dims': num_dims, 'num_padding_dims': padding}


def validate_config(input_config) -> None:
    """Checks the `input` config values that need no data; call it at trainer start.

    Raises:
      ValueError: naming the key, the value and what is allowed.
    """
    name = input_config.dataset
    _check_name(name)
    if input_config.binarize not in BINARIZE_MODES:
        raise ValueError(
            f'input.binarize={input_config.binarize!r} is not supported; '
            f'allowed: {", ".join(BINARIZE_MODES)}.'
        )
    if not _INFO[name]['is_image']:
        if input_config.binarize != 'none':
            raise ValueError(
                f'input.binarize={input_config.binarize!r} applies to images only, but '
                f'input.dataset={name!r} is a toy 2-D set; use binarize="none".'
            )
        if input_config.pad_to_32:
            raise ValueError(
                f'input.pad_to_32=True applies to images only, but input.dataset={name!r} is a '
                'toy 2-D set.'
            )
        if not _is_positive_int(input_config.toy_num_examples):
            raise ValueError(
                f'input.toy_num_examples must be a positive int, got '
                f'{input_config.toy_num_examples!r}.'
            )
        noise = input_config.toy_noise
        if not isinstance(noise, int | float) or not math.isfinite(noise) or noise < 0:
            raise ValueError(f'input.toy_noise must be a finite float >= 0, got {noise!r}.')
    elif input_config.pad_to_32:
        height, width, _ = _INFO[name]['shape']
        if height > 32 or width > 32:
            raise ValueError(f'input.pad_to_32: {name} images are {height}x{width}, over 32x32.')
    for key in ('num_train_examples', 'num_test_examples'):
        value = input_config[key]
        if value is not None and not _is_positive_int(value):
            raise ValueError(f'input.{key} must be None or a positive int, got {value!r}.')


def get_datasets(input_config) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Loads and preprocesses the train and test splits of `input_config.dataset`.

    Real data sets are read once per process per (name, split, data dir, truncation) and cached;
    the returned arrays are fresh copies.

    Args:
      input_config: the `config.input` ConfigDict (keys as in configs/default.py): dataset,
        data_dir, binarize, pad_to_32, num_train_examples, num_test_examples,
        toy_num_examples, toy_noise.

    Returns:
      `(train, test)`, each `{'image': float32 [N, *data_shape(input_config)], 'label': int32
      [N]}`. Images lie in [0, 1] (in {0, 1} with binarize='static'); toy points are unscaled.

    Raises:
      ValueError: a bad config value (naming the key), no data dir for a TFDS set, or a
        truncation longer than the split.
      FileNotFoundError: the TFDS data set is not prepared in the data dir.
    """
    validate_config(input_config)
    name = input_config.dataset
    limits = {'train': input_config.num_train_examples, 'test': input_config.num_test_examples}
    if name in TOY_DATASETS:
        splits = {
            split: make_toy(
                name, input_config.toy_num_examples, input_config.toy_noise, seed=_TOY_SEED[split]
            )
            for split in _SPLITS
        }
    elif name == 'digits':
        splits = _load_digits()
    else:
        data_dir = resolve_data_dir(input_config.data_dir)
        splits = {
            split: _read_tfds_split(name, split, data_dir, limits[split]) for split in _SPLITS
        }
    out = []
    for split in _SPLITS:
        image, label = splits[split]['image'], splits[split]['label']
        limit = limits[split]
        if limit is not None:
            if limit > len(image):
                key = f'num_{split}_examples'
                raise ValueError(
                    f'input.{key}={limit} exceeds the {len(image)} examples of the {name} '
                    f'{split} split.'
                )
            image, label = image[:limit], label[:limit]
        if _INFO[name]['is_image']:
            image = _preprocess_images(image, name, input_config, seed=_STATIC_BINARIZE_SEED[split])
        else:
            image = image.astype(np.float32)
        out.append({'image': image, 'label': label.astype(np.int32)})
    return out[0], out[1]


def resolve_data_dir(data_dir: str | None) -> str:
    """Returns `data_dir`, else `$TFDS_DATA_DIR`; local paths are made absolute.

    Raises:
      ValueError: neither is set.
    """
    data_dir = data_dir or os.environ.get('TFDS_DATA_DIR')
    if not data_dir:
        raise ValueError(
            'input.data_dir is not set and $TFDS_DATA_DIR is empty: set one of them to a TFDS '
            'data dir holding the prepared data set (see the README, "Where the data comes '
            'from").'
        )
    data_dir = os.fspath(data_dir)
    if '://' not in data_dir:  # Leave gs:// and other remote paths alone.
        data_dir = os.path.abspath(os.path.expanduser(data_dir))
    return data_dir


@functools.lru_cache(maxsize=8)  # A few splits; each full split is 8-47 MB of uint8.
def _read_tfds_split(
    name: str, split: str, data_dir: str, num_examples: int | None
) -> dict[str, np.ndarray]:
    """Reads the first `num_examples` (None: all) records of a prepared TFDS split.

    Returns:
      Read-only `{'image': uint8 [N, H, W, C], 'label': int64 [N]}` (cached per process).
    """
    import tensorflow_datasets as tfds  # Imported here: the embedded/toy sets do not need it.

    builder = tfds.builder(name, data_dir=data_dir)
    if not builder.is_prepared():
        raise FileNotFoundError(_not_prepared_message(name, builder, data_dir))
    source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    n = len(source) if num_examples is None else min(num_examples, len(source))
    image = np.empty((n, *source.dataset_info.features['image'].shape), np.uint8)
    label = np.zeros((n,), np.int64)
    # Batched __getitems__ reads the array_record file in one call per chunk; decoding (PNG, in
    # tfds/PIL) is per record either way and dominates (~90 us per 28x28 image).
    for start in range(0, n, _READ_CHUNK):
        stop = min(start + _READ_CHUNK, n)
        records = source.__getitems__(list(range(start, stop)))
        image[start:stop] = np.stack([r['image'] for r in records])
        if _INFO[name]['has_labels']:
            label[start:stop] = [r['label'] for r in records]
    if image.size and image.max() > _TFDS_MAX_VALUE[name]:
        raise ValueError(
            f'TFDS {name} in {data_dir} holds pixel values up to {image.max()}, expected at most '
            f'{_TFDS_MAX_VALUE[name]}; the prepared data set is not what this loader expects.'
        )
    image.flags.writeable = False
    label.flags.writeable = False
    return {'image': image, 'label': label}


def _not_prepared_message(name: str, builder, data_dir: str) -> str:
    dataset_dir = builder.data_path.parent
    found = sorted(p.name for p in dataset_dir.iterdir()) if dataset_dir.exists() else []
    return (
        f'TFDS data set {name!r} (version {builder.version}) is not prepared in data dir '
        f'{data_dir!r}: looked for {builder.data_path}/dataset_info.json (versions found in '
        f'{dataset_dir}: {", ".join(found) or "none"}). Prepare it on a machine with TensorFlow '
        f'and internet access: `tfds build {name} --data_dir {data_dir} --file_format '
        'array_record` (tfds.data_source reads array_record only), or copy a prepared data dir '
        'from another machine and point input.data_dir or $TFDS_DATA_DIR at it.'
    )


@functools.lru_cache(maxsize=1)
def _load_digits() -> dict[str, dict[str, np.ndarray]]:
    """scikit-learn's 8x8 digits, stratified 80/20 split; uint8 [N, 8, 8, 1] values 0..16."""
    from sklearn import datasets, model_selection  # Imported here: sklearn takes ~2 s to import.

    digits = datasets.load_digits()
    images = digits.images.astype(np.uint8)[..., None]
    train_image, test_image, train_label, test_label = model_selection.train_test_split(
        images,
        digits.target,
        test_size=_DIGITS_TEST_FRACTION,
        stratify=digits.target,
        random_state=_DIGITS_SPLIT_SEED,
    )
    out = {
        'train': {'image': train_image, 'label': train_label},
        'test': {'image': test_image, 'label': test_label},
    }
    for split in out.values():
        for array in split.values():
            array.flags.writeable = False
    return out


def _preprocess_images(image: np.ndarray, name: str, input_config, seed: int) -> np.ndarray:
    """uint8 [N, H, W, C] -> float32 [N, H', W', C] scaled, binarised, padded."""
    max_value = 16 if name == 'digits' else _TFDS_MAX_VALUE[name]
    image = image.astype(np.float32) / np.float32(max_value)
    # binarized_mnist is already 0/1, and Bernoulli(0/1) is the identity: skip the draw.
    if input_config.binarize == 'static' and name != 'binarized_mnist':
        image = binarize_static(image, seed=seed)
    if input_config.pad_to_32:
        image = pad_to_32(image)
    return image


def binarize_static(image: np.ndarray, *, seed: int) -> np.ndarray:
    """One Bernoulli(pixel) draw per pixel with a fixed numpy seed.

    The first n images get the same draw whatever the number of images (C-order fill).

    Args:
      image: float [N, H, W, C] in [0, 1].
      seed: int seed of `np.random.default_rng`.

    Returns:
      float32 [N, H, W, C] in {0, 1}.
    """
    uniform = np.random.default_rng(seed).random(image.shape, dtype=np.float32)
    return (uniform < image).astype(np.float32)


def pad_to_32(image: np.ndarray) -> np.ndarray:
    """Zero-pads images to 32x32, centred (an odd margin puts the extra pixel bottom/right).

    Args:
      image: [N, H, W, C] with H, W <= 32.

    Returns:
      [N, 32, 32, C], same dtype.

    Raises:
      ValueError: H or W over 32.
    """
    _, height, width, _ = image.shape
    if height > 32 or width > 32:
        raise ValueError(f'pad_to_32: images are {height}x{width}, larger than 32x32.')
    top, left = (32 - height) // 2, (32 - width) // 2
    pad = ((0, 0), (top, 32 - height - top), (left, 32 - width - left), (0, 0))
    return np.pad(image, pad)


def make_toy(name: str, num_examples: int, noise: float, *, seed: int) -> dict[str, np.ndarray]:
    """Draws a toy 2-D data set (definitions in the module docstring).

    Args:
      name: one of `TOY_DATASETS`.
      num_examples: N.
      noise: Gaussian noise std for eight_gaussians and two_moons; pinwheel and checkerboard
        have fixed standard definitions and do not use it.
      seed: int seed of `np.random.default_rng`.

    Returns:
      `{'image': float32 [N, 2], 'label': int32 [N]}`.
    """
    rng = np.random.default_rng(seed)
    if name == 'eight_gaussians':
        label = rng.integers(0, 8, num_examples)
        points = eight_gaussians_centres()[label] + noise * rng.standard_normal((num_examples, 2))
    elif name == 'two_moons':
        from sklearn import datasets  # Imported here: sklearn takes ~2 s to import.

        moons, label = datasets.make_moons(
            num_examples, noise=None, random_state=int(rng.integers(2**31))
        )
        points = _MOONS_SCALE * (moons - _MOONS_CENTRE) + noise * rng.standard_normal(
            (num_examples, 2)
        )
    elif name == 'pinwheel':
        label = rng.permutation(np.arange(num_examples) % _PINWHEEL_NUM_ARMS)
        features = rng.standard_normal((num_examples, 2)) * np.array(
            [_PINWHEEL_RADIAL_STD, _PINWHEEL_TANGENTIAL_STD]
        )
        features[:, 0] += _PINWHEEL_RADIAL_MEAN
        angles = 2 * np.pi * label / _PINWHEEL_NUM_ARMS + _PINWHEEL_RATE * np.exp(features[:, 0])
        cos, sin = np.cos(angles), np.sin(angles)
        # As FFJORD: features @ [[cos, -sin], [sin, cos]], then times 2.
        points = _PINWHEEL_SCALE * np.stack(
            [
                features[:, 0] * cos + features[:, 1] * sin,
                -features[:, 0] * sin + features[:, 1] * cos,
            ],
            axis=-1,
        )
    elif name == 'checkerboard':
        x1 = rng.random(num_examples) * 4 - 2
        x2 = rng.random(num_examples) - rng.integers(0, 2, num_examples) * 2 + np.floor(x1) % 2
        points = 2 * np.stack([x1, x2], axis=-1)
        label = np.zeros((num_examples,), np.int64)
    else:
        raise ValueError(
            f'make_toy: {name!r} is not a toy set; allowed: {", ".join(TOY_DATASETS)}.'
        )
    return {'image': points.astype(np.float32), 'label': label.astype(np.int32)}


def eight_gaussians_centres() -> np.ndarray:
    """The 8 mixture centres, [8, 2] float64: radius 5, angle 2*pi*k/8 for component k."""
    angles = 2 * np.pi * np.arange(8) / 8
    return EIGHT_GAUSSIANS_RADIUS * np.stack([np.cos(angles), np.sin(angles)], axis=-1)


def true_log_density(name: str, points: np.ndarray, noise: float) -> np.ndarray:
    """Log density of the distribution a toy 2-D set is drawn from (for density plots).

    eight_gaussians: the exact mixture. two_moons: the limit distribution (uniform angle along
    each half circle, convolved with the Gaussian noise), by quadrature over the angle.
    checkerboard: exact, log(1/32) on the black squares and -inf elsewhere. pinwheel: exact
    change of variables with numerically found preimages (see `_pinwheel_log_density`).

    Args:
      name: one of `TOY_DATASETS`.
      points: [M, 2].
      noise: the `input.toy_noise` the set was drawn with (> 0 for eight_gaussians and
        two_moons; unused by checkerboard and pinwheel).

    Returns:
      float64 [M] log densities.

    Raises:
      ValueError: unknown name, bad `points` shape, or noise <= 0 for eight_gaussians or
        two_moons (with no noise they are point masses and curves, which have no density).
    """
    points = np.asarray(points, np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f'true_log_density: points must be [M, 2], got {points.shape}.')
    if name == 'checkerboard':
        cell = np.floor(points / 2)  # Unit-square indices before FFJORD's x2 scale.
        in_box = np.all((points >= -4) & (points < 4), axis=-1)
        inside = in_box & (cell.sum(-1) % 2 == 0)
        return np.where(inside, -np.log(32.0), -np.inf)
    if name == 'pinwheel':
        return _pinwheel_log_density(points)
    if name not in ('eight_gaussians', 'two_moons'):
        raise ValueError(
            f'true_log_density: {name!r} is not a toy set; allowed: {", ".join(TOY_DATASETS)}.'
        )
    if not noise > 0:
        raise ValueError(f'true_log_density({name!r}): noise must be > 0, got {noise!r}.')
    if name == 'eight_gaussians':
        centres = eight_gaussians_centres()
        weights = np.full(8, 1 / 8)
    else:
        # Midpoint rule over each moon's angle, arc spacing <= noise / 4: a Gaussian summed on a
        # lattice that fine matches its integral to ~exp(-2 pi^2 16), so only the ends add error.
        num_angles = max(64, math.ceil(4 * np.pi * _MOONS_SCALE / noise))
        t = (np.arange(num_angles) + 0.5) * np.pi / num_angles
        outer = np.stack([np.cos(t), np.sin(t)], axis=-1)
        inner = np.stack([1 - np.cos(t), 0.5 - np.sin(t)], axis=-1)
        centres = _MOONS_SCALE * (np.concatenate([outer, inner]) - _MOONS_CENTRE)
        weights = np.full(2 * num_angles, 1 / (2 * num_angles))
    return _log_gaussian_mixture(points, centres, weights, noise)


def _pinwheel_log_density(points: np.ndarray) -> np.ndarray:
    """Exact log density of the pinwheel (`make_toy`) by a change of variables.

    A point is x = s R(-a) f: features f = (r, t) ~ N((m, 0), diag(sr, st)^2), arm k uniform
    over K, angle a = 2 pi k / K + rate exp(r), scale s. In polar coordinates f = rho (cos psi,
    sin psi), the rotation keeps rho and moves the angle to phi = psi - a, so x / s has polar
    coordinates (rho, h(psi) - 2 pi k / K) with h(psi) = psi - rate exp(rho cos psi). Both polar
    area elements are rho d(rho) d(angle), so

        p(x) = s^-2 sum over (k, psi) with h(psi) - 2 pi k / K = phi (mod 2 pi) of
               N(f(psi)) / (K |h'(psi)|),   h'(psi) = 1 + rate rho sin(psi) exp(rho cos psi).

    The preimages are the solutions psi in [-pi, pi) of h(psi) - phi = 2 pi j / K for integers
    j (each j is one arm); since h(pi) - h(-pi) = 2 pi there are at least K of them (more where
    h is not monotone, far from the data). They are bracketed on `_PINWHEEL_GRID` angles (where
    floor((h - phi) K / 2 pi) changes) and refined by `_PINWHEEL_BISECTIONS` bisection steps to
    float64 precision; a grid 8x finer changes the result by < 1e-11 nats on N(0, 9 I) points.
    A root pair closer together than one grid step (at a fold of h, >= 10 std from the data)
    would be missed.

    Args:
      points: float64 [M, 2].

    Returns:
      float64 [M] log densities.
    """
    y = points / _PINWHEEL_SCALE
    level_gap = 2 * np.pi / _PINWHEEL_NUM_ARMS
    psi = np.linspace(-np.pi, np.pi, _PINWHEEL_GRID + 1)

    def levels(angle, rho, phi):  # (h(angle) - phi) in units of the angle between arms
        return (angle - _PINWHEEL_RATE * np.exp(rho * np.cos(angle)) - phi) / level_gap

    out = np.empty(len(points))
    chunk = 1024  # [chunk, grid] float64 buffers of 8 MB.
    for start in range(0, len(points), chunk):
        rho = np.hypot(y[start : start + chunk, 0], y[start : start + chunk, 1])
        phi = np.arctan2(y[start : start + chunk, 1], y[start : start + chunk, 0])
        index = np.floor(levels(psi[None], rho[:, None], phi[:, None]))  # [chunk, grid + 1]
        point, cell = np.nonzero(index[:, 1:] != index[:, :-1])
        low = np.minimum(index[point, cell], index[point, cell + 1])
        count = np.abs(index[point, cell + 1] - index[point, cell]).astype(np.int64)
        # One root per integer level crossed within a cell: levels low + 1, ..., low + count.
        point, cell, low = (np.repeat(v, count) for v in (point, cell, low))
        offset = np.arange(len(point)) - np.repeat(np.cumsum(count) - count, count)
        target = low + 1 + offset
        left, right = psi[cell], psi[cell + 1]
        rho_k, phi_k = rho[point], phi[point]
        f_left = levels(left, rho_k, phi_k) - target
        for _ in range(_PINWHEEL_BISECTIONS):
            mid = 0.5 * (left + right)
            f_mid = levels(mid, rho_k, phi_k) - target
            keep_right = np.sign(f_mid) == np.sign(f_left)
            left = np.where(keep_right, mid, left)
            f_left = np.where(keep_right, f_mid, f_left)
            right = np.where(keep_right, right, mid)
        root = 0.5 * (left + right)
        r, t = rho_k * np.cos(root), rho_k * np.sin(root)
        slope = 1 + _PINWHEEL_RATE * rho_k * np.sin(root) * np.exp(r)
        log_terms = (
            -0.5 * ((r - _PINWHEEL_RADIAL_MEAN) / _PINWHEEL_RADIAL_STD) ** 2
            - 0.5 * (t / _PINWHEEL_TANGENTIAL_STD) ** 2
            - np.log(2 * np.pi * _PINWHEEL_RADIAL_STD * _PINWHEEL_TANGENTIAL_STD)
            - np.log(_PINWHEEL_NUM_ARMS * np.abs(slope))
            - 2 * np.log(_PINWHEEL_SCALE)
        )
        # log-sum-exp over each point's roots (every point has >= K of them).
        peak = np.full(len(rho), -np.inf)
        np.maximum.at(peak, point, log_terms)
        total = np.zeros(len(rho))
        np.add.at(total, point, np.exp(log_terms - peak[point]))
        out[start : start + chunk] = peak + np.log(total)
    return out


def _log_gaussian_mixture(
    points: np.ndarray, centres: np.ndarray, weights: np.ndarray, std: float
) -> np.ndarray:
    """log sum_j w_j N(x; c_j, std^2 I) for x [M, 2], c [J, 2], w [J] -> [M], chunked over M."""
    out = np.empty(len(points))
    chunk = max(1, 2**22 // len(centres))  # Bounds the [chunk, J] buffer at ~32 MB.
    for start in range(0, len(points), chunk):
        x = points[start : start + chunk]
        # |x - c|^2 expanded into a matmul (float64: the cancellation is harmless at this scale).
        sq = (x**2).sum(-1)[:, None] - 2 * x @ centres.T + (centres**2).sum(-1)[None, :]
        sq = np.maximum(sq, 0.0)
        log_terms = np.log(weights)[None, :] - sq / (2 * std**2) - np.log(2 * np.pi * std**2)
        peak = log_terms.max(-1, keepdims=True)  # logsumexp: subtract the max for stability.
        out[start : start + chunk] = peak[:, 0] + np.log(np.exp(log_terms - peak).sum(-1))
    return out


def _check_name(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(
            f'input.dataset={name!r} is not supported; allowed: {", ".join(DATASETS)}.'
        )


def _is_positive_int(value) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool) and value > 0
