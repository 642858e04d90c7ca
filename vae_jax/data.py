"""Data sets as numpy arrays: TFDS images, your own `.npz`, the embedded `digits`, toy 2-D sets.

`get_datasets(config.input)` returns `(train, test)`, each `{'image': [N, H, W, C] as stored,
'label': int32 [N]}`, held in host memory; the trainer puts them on the device once. Images stay
as stored, one byte per value (a quarter of float32's memory): uint8 0..max_value
(`stored_max_value`: 255, or 16 for digits) or bool (binary sets and `binarize='static'`);
float32 only for the toy 2-D points and for `.npz` files that are already float in [0, 1]. The
jitted step turns a gathered batch into the model's input, float32 [B, *data_shape]
(vae_jax/input_transform.py: scaled by 1/max_value, then padded when `pad_to_32`).

Data sets (`input.dataset`):
- `mnist`, `fashion_mnist` (60k/10k, 28x28x1, labels 0..9) and `binarized_mnist` (Larochelle &
  Murray's fixed binarisation, 50k/10k, no labels) read from a prepared TFDS data dir with
  `tfds.data_source(..., download=False)` (`array_record` files, no TensorFlow needed). The train
  split is TFDS's `train` (for binarized_mnist the 50k train images only, as in the IWAE paper;
  its 10k `validation` split is not used). Records come in TFDS's order, which TFDS shuffled once
  when the data set was prepared (deterministic, but not the order of the original files). Their
  shapes and classes are known here, so a run on them can be rebuilt without any data.
- `tfds:<name>`: any TFDS image data set, e.g. `tfds:cifar10` or `tfds:svhn_cropped`: splits
  `train` and `test`, an `image` feature of fixed shape (uint8, 0..255) and an optional
  `label` ClassLabel, as the builder's info says. `tfds:mnist` reads the same arrays as `mnist`.
- `npz`: your own arrays in the file `input.path` (layout in vae_jax/data_sources.py):
  `train_images`, `test_images` ([N, H, W, C] or [N, H, W]; uint8 0..255, bool, or float already
  in [0, 1], kept as float32), optionally `train_labels`, `test_labels` (int [N]). The path is
  recorded as given; a relative one counts from the current directory when the data are read.
- `dsprites`, `dsprites32`: dSprites with its five ground-truth factors (vae_jax/dsprites.py),
  64x64 or 32x32 binary images, label = the sprite's shape, plus `'factors'` int32 [N, 5]. From
  the TFDS `dsprites` set when prepared in the data dir, else drawn by the library's renderer.
  Test split: 10,000 fixed combinations (`num_test_examples`); train split: the rest, or
  `num_train_examples` of them (the whole train split is 3 GB as bool at 64x64).
- `digits`: scikit-learn's bundled 8x8 digits (1797 images, uint8 values 0..16), split
  into train/test by a fixed stratified 80/20 split.
- Toy 2-D sets (data shape `(2,)`, points unscaled), `input.toy_num_examples` points per split,
  train and test drawn with different fixed seeds: `eight_gaussians`, `two_moons`, `pinwheel`,
  `checkerboard` (definitions in vae_jax/toy_data.py, whose names `make_toy`,
  `true_log_density`, `eight_gaussians_centres` are also importable from here).

Where TFDS data live: `input.data_dir`, else `$TFDS_DATA_DIR`, else `~/tensorflow_datasets`
(`resolve_data_dir`); leave `input.data_dir` unset in configs that others rerun, so a run names
its data but not a machine's folder. `input.download=True` lets TFDS download and prepare a set
that is not prepared (needs internet); by default a missing set is an error saying where it
looked and how to prepare it.

A run rebuilt without its data (evaluation or loading on another machine) needs one example's
shape and the number of classes: `data_shape` and `dataset_info` give them from the config
alone. For `npz` and `tfds:` sets they come from files, so the trainer records them in the run's
config at the start (`record_data_facts`: `input.data_shape`, `input.num_classes`) and reading
the data later checks that they still hold.

Preprocessing, in this order: truncate (`num_train_examples`, `num_test_examples`); here, once
on the host, binarise when `binarize='static'` (one Bernoulli(pixel / max_value) draw per pixel
with a fixed seed per split, stored as bool); then, in the jitted step on each batch
(`input_transform.to_model_input`), scale to [0, 1] and zero-pad to 32x32 (`pad_to_32`,
centred); `'dynamic'` binarisation is drawn after that, in the step, from the step's key. Data
are the same for every `config.seed`, so runs with different seeds see the same examples.

How the train split reaches the step (`input.pipeline`, vae_jax/streaming.py): 'device' puts the
arrays returned here on every device once; 'stream' reads each step's rows while training, from
the files (TFDS `array_record` through `tfds.data_source`, or an uncompressed `.npz` memory-
mapped) or from these arrays for the sets built in code, in the same order and with the same
preprocessing, so the two give the same batches; 'auto' (the default) streams only a split
larger than `input.device_budget_gb`.

References: LeCun et al. (1998) MNIST; Xiao et al. (2017) Fashion-MNIST; Larochelle & Murray
(2011) binarized MNIST; Burda et al. (2016) IWAE splits; Johnson et al. (2016) and Grathwohl et
al. (2019, FFJORD) toy 2-D sets.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np

from vae_jax import data_sources, dsprites, stored_images, toy_data

TFDS_DATASETS = ('mnist', 'fashion_mnist', 'binarized_mnist')
EMBEDDED_DATASETS = ('digits',)
TOY_DATASETS = toy_data.TOY_DATASETS
# Images with ground-truth factors (vae_jax/dsprites.py: TFDS when prepared, else rendered).
FACTOR_DATASETS = ('dsprites', 'dsprites32')
NPZ = 'npz'
TFDS_PREFIX = 'tfds:'  # 'tfds:<name>': any TFDS image data set.
# Names whose facts (shape, classes) are known here; `npz` and 'tfds:<name>' read them from files.
DATASETS = TFDS_DATASETS + EMBEDDED_DATASETS + TOY_DATASETS + FACTOR_DATASETS + (NPZ,)
BINARIZE_MODES = ('none', 'static', 'dynamic')
ALLOWED_NAMES = ', '.join(map(repr, DATASETS)) + ", or 'tfds:<name>' for any TFDS image data set"

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
    # Label: the sprite's shape (square, ellipse, heart); all five factors under 'factors'.
    'dsprites': dict(num_classes=3, is_image=True, has_labels=True, shape=(64, 64, 1)),
    'dsprites32': dict(num_classes=3, is_image=True, has_labels=True, shape=(32, 32, 1)),
}
# Stored pixel value that means "white": TFDS binarized_mnist stores 0/1, the others 0..255.
TFDS_MAX_VALUE = {'mnist': 255, 'fashion_mnist': 255, 'binarized_mnist': 1}
TFDS_MAX_VALUE.update(dict.fromkeys(FACTOR_DATASETS, 1))
_SPLITS = ('train', 'test')
# Fixed seeds: the data never depend on config.seed (see the module docstring).
STATIC_BINARIZE_SEED = {'train': 0, 'test': 1}
_TOY_SEED = {'train': 0, 'test': 1}

resolve_data_dir = data_sources.resolve_data_dir
binarize_static = stored_images.binarize_static
# The toy 2-D sets (vae_jax/toy_data.py) under their names here.
EIGHT_GAUSSIANS_RADIUS = toy_data.EIGHT_GAUSSIANS_RADIUS
make_toy = toy_data.make_toy
eight_gaussians_centres = toy_data.eight_gaussians_centres
true_log_density = toy_data.true_log_density


def is_dataset_name(name) -> bool:
    """Whether `input.dataset` names a data set this module reads (`ALLOWED_NAMES`)."""
    return isinstance(name, str) and (
        name in DATASETS or (name.startswith(TFDS_PREFIX) and len(name) > len(TFDS_PREFIX))
    )


def dataset_info(input_config) -> dict[str, Any]:
    """Facts about a data set, without reading its examples.

    Args:
      input_config: the `config.input` ConfigDict, or just a data set name for the sets whose
        facts are fixed here (`DATASETS` except 'npz').

    Returns:
      `{'num_classes': int, 'is_image': bool, 'has_labels': bool}`; labels lie in
      [0, num_classes); a set without labels has num_classes 1 and all labels 0. For `npz` and
      `tfds:` sets: the recorded `input.num_classes` if set, else read from the file's labels or
      the TFDS builder's info.

    Raises:
      ValueError: unknown name, a bare name of a set whose facts live in files, or a bad file.
      FileNotFoundError: an `npz` file that does not exist (and nothing recorded).
    """
    if isinstance(input_config, str):
        _check_name(input_config)
        if input_config not in _INFO:
            raise ValueError(
                f'dataset_info({input_config!r}): the facts of this data set live in files; '
                'pass the whole input config (config.input).'
            )
        return {k: v for k, v in _INFO[input_config].items() if k != 'shape'}
    name = input_config.dataset
    _check_name(name)
    if name in _INFO:
        return dataset_info(name)
    num_classes = input_config.get('num_classes')
    if num_classes is None:
        num_classes = _read_file_facts(input_config)['num_classes']
    num_classes = int(num_classes)
    return {'num_classes': max(num_classes, 1), 'is_image': True, 'has_labels': num_classes > 0}


def data_shape(input_config) -> tuple[int, ...]:
    """Shape of one example after preprocessing, without reading the examples.

    Args:
      input_config: the `config.input` ConfigDict (keys as in configs/default.py).

    Returns:
      `(H, W, C)` for images (`(32, 32, C)` with `pad_to_32`), `(2,)` for toy sets. For `npz`
      and `tfds:` sets: the recorded `input.data_shape` if set, else read from the `.npy`
      headers or the TFDS builder's info.

    Raises:
      ValueError: a bad config value (see `validate_config`) or a bad file.
      FileNotFoundError: an `npz` file that does not exist (and nothing recorded).
    """
    validate_config(input_config)
    name = input_config.dataset
    if name in _INFO:
        shape = _INFO[name]['shape']
    elif input_config.get('data_shape') is not None:
        return tuple(int(d) for d in input_config.data_shape)  # Recorded: already padded.
    else:
        shape = _read_file_facts(input_config)['image_shape']
    if input_config.pad_to_32:
        _check_fits_32(input_config, *shape[:2])
        shape = (32, 32, shape[2])
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
    name = input_config.dataset
    if name not in _INFO:
        # npz / tfds: the value grid (and, with padding, the real size) is not known without the
        # data, except for binarised draws of unpadded images.
        num_dims = math.prod(data_shape(input_config))
        binary = input_config.binarize != 'none' and not input_config.pad_to_32
        return {'num_levels': 2 if binary else None, 'num_dims': num_dims, 'num_padding_dims': 0}
    real_shape = _INFO[name]['shape']
    num_dims = math.prod(real_shape)
    padding = math.prod(data_shape(input_config)) - num_dims
    if not _INFO[name]['is_image']:
        levels = None
    elif input_config.binarize != 'none' or name == 'binarized_mnist':
        levels = 2
    else:
        levels = (16 if name == 'digits' else TFDS_MAX_VALUE[name]) + 1
    return {'num_levels': levels, 'num_dims': num_dims, 'num_padding_dims': padding}


def stored_max_value(input_config) -> int:
    """The stored value of a white pixel in `get_datasets`' uint8 images: 16 for digits, else 255.

    (binarized_mnist and dsprites are stored as bool, 0/1.) The jitted step divides by it
    (`input_transform.to_model_input`).

    Args:
      input_config: the `config.input` ConfigDict, or a data set name.
    """
    name = input_config if isinstance(input_config, str) else input_config.dataset
    _check_name(name)
    if name == 'digits':
        return 16
    return TFDS_MAX_VALUE.get(name, 255)


def record_data_facts(config):
    """Returns a copy of `config` with the data facts that live in files recorded in it.

    For `npz` and `tfds:` sets, sets `input.data_shape` (one example after preprocessing) and
    `input.num_classes` (0 for a set without labels), so that the run's config.json rebuilds the
    model without the data. Other sets' facts are fixed in this module: nothing is recorded,
    and the config is returned unchanged. Call it once at train start, before config.json is
    written.

    Args:
      config: the experiment config (`config.input` as in configs/default.py).

    Returns:
      A deep copy of `config` (the caller's object is not modified).

    Raises:
      ValueError: recorded values that disagree with the data, or a bad config or file.
      FileNotFoundError: an `npz` file that does not exist.
    """
    config = copy.deepcopy(config)
    inputs = config.input
    validate_config(inputs)
    if inputs.dataset in _INFO:
        return config
    recorded = _recordable_facts(inputs)
    _check_recorded(inputs, recorded)
    for key, value in recorded.items():
        inputs[key] = value
    return config


def validate_config(input_config) -> None:
    """Checks the `input` config values that need no data; call it at trainer start.

    Keys added after a run was recorded (`path`, `download`, `data_shape`, `num_classes`) read
    as unset when an older config.json lacks them.

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
    path = input_config.get('path')
    if name == NPZ:
        if not isinstance(path, str) or not path:
            raise ValueError(
                f"input.path={path!r}: input.dataset='npz' needs the path of an .npz file "
                '(e.g. --config.input.path=my_data.npz).'
            )
    elif path is not None:
        raise ValueError(
            f"input.path={path!r} applies only to input.dataset='npz' (here {name!r}); "
            'allowed here: unset (None).'
        )
    download = input_config.get('download', False)
    if not isinstance(download, bool):
        raise ValueError(f'input.download={download!r} is invalid; allowed: True | False.')
    if download and not _is_tfds(name):
        raise ValueError(
            f'input.download=True applies to TFDS data sets only ({", ".join(TFDS_DATASETS)}, '
            f"'tfds:<name>'), not input.dataset={name!r}; allowed here: False."
        )
    shape, num_classes = input_config.get('data_shape'), input_config.get('num_classes')
    if (shape is not None or num_classes is not None) and name in _INFO:
        raise ValueError(
            f'input.data_shape={shape!r}, input.num_classes={num_classes!r}: these record the '
            f"facts of 'npz' and 'tfds:' data sets; {name!r} has fixed facts, so leave them unset."
        )
    if shape is not None and (
        not isinstance(shape, tuple | list)
        or len(shape) != 3
        or not all(_is_positive_int(d) for d in shape)
    ):
        raise ValueError(
            f'input.data_shape={shape!r} is invalid; allowed: None or (H, W, C) of positive ints '
            '(recorded at train start).'
        )
    if num_classes is not None and not (_is_positive_int(num_classes) or num_classes == 0):
        raise ValueError(
            f'input.num_classes={num_classes!r} is invalid; allowed: None or an int >= 0 '
            '(0: no labels; recorded at train start).'
        )
    if name in _INFO and not _INFO[name]['is_image']:
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
    elif name in _INFO and input_config.pad_to_32:
        height, width, _ = _INFO[name]['shape']
        if height > 32 or width > 32:
            raise ValueError(f'input.pad_to_32: {name} images are {height}x{width}, over 32x32.')
    for key in ('num_train_examples', 'num_test_examples'):
        value = input_config[key]
        if value is not None and not _is_positive_int(value):
            raise ValueError(f'input.{key} must be None or a positive int, got {value!r}.')


def get_datasets(
    input_config, likelihood: str | None = None
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Loads and preprocesses the train and test splits of `input_config.dataset`.

    TFDS data sets are read once per process per (name, split, data dir, truncation) and cached;
    the returned arrays are fresh copies.

    Args:
      input_config: the `config.input` ConfigDict (keys as in configs/default.py): dataset,
        path, data_dir, download, binarize, pad_to_32, num_train_examples, num_test_examples,
        toy_num_examples, toy_noise, and the recorded data_shape, num_classes.
      likelihood: `model.likelihood`; when given and `binarize='none'`, each split must lie in
        its support (`distributions.check_support`), and an error names the file and key (or
        data set and split) that does not.

    Returns:
      `(train, test)`, each `{'image': [N, H, W, C] as stored, 'label': int32 [N]}` (dsprites
      adds 'factors' int32 [N, 5]). Images are not scaled or padded here (the jitted step does
      that, `input_transform.to_model_input`): uint8 0..`stored_max_value` (mnist,
      fashion_mnist, 'tfds:' sets, digits, uint8 `.npz`), bool (binarized_mnist, dsprites, bool
      `.npz`, and every image set with binarize='static'), or float32 in [0, 1] (float `.npz`);
      toy points are float32 [N, 2], unscaled. [H, W] is the stored size (before `pad_to_32`).

    Raises:
      ValueError: a bad config value (naming the key), a bad file (naming it and the key), data
        outside the likelihood's support, recorded facts the data contradict, or a truncation
        longer than the split.
      FileNotFoundError: an `npz` file that does not exist, or a TFDS data set that is not
        prepared in the data dir (and `input.download` is False).
    """
    validate_config(input_config)
    name = input_config.dataset
    limits = {'train': input_config.num_train_examples, 'test': input_config.num_test_examples}
    if name in _INFO and not _INFO[name]['is_image']:
        splits = {
            split: make_toy(
                name, input_config.toy_num_examples, input_config.toy_noise, seed=_TOY_SEED[split]
            )
            for split in _SPLITS
        }
        max_value = 1  # unscaled points: the support check reads them as they are
    elif name == 'digits':
        splits, max_value = data_sources.load_digits(), 16
    elif name in FACTOR_DATASETS:
        splits = dsprites.load_splits(name, limits, resolve_data_dir(input_config.data_dir))
        max_value = 1
    elif name == NPZ:
        raw = data_sources.read_npz(input_config.path)
        splits, max_value = {split: raw[split] for split in _SPLITS}, raw['max_value']
    else:
        data_dir = resolve_data_dir(input_config.data_dir)
        download = input_config.get('download', False)
        if name in _INFO:
            curated = dict(has_labels=_INFO[name]['has_labels'], max_value=TFDS_MAX_VALUE[name])
            splits, max_value = data_sources.read_tfds(name, data_dir, limits, download, **curated)
        else:
            tfds_name = name.removeprefix(TFDS_PREFIX)
            splits, max_value = data_sources.read_tfds(tfds_name, data_dir, limits, download)
    if name not in _INFO:
        _check_recorded(input_config, _recordable_facts(input_config))
    out = []
    for split in _SPLITS:
        image, label = splits[split]['image'], splits[split]['label']
        limit = split_limit(input_config, split, len(image))
        if limit is not None:
            image, label = image[:limit], label[:limit]
        if name in _INFO and not _INFO[name]['is_image']:
            image = image.astype(np.float32)
            if likelihood is not None and input_config.binarize == 'none':
                check_support(likelihood, image, max_value, input_config, split)
        else:
            image = held_split_images(image, max_value, input_config, split, likelihood)
        example = {'image': image, 'label': label.astype(np.int32)}
        if 'factors' in splits[split]:
            example['factors'] = splits[split]['factors'][: len(image)]
        out.append(example)
    return out[0], out[1]


def _read_file_facts(input_config) -> dict[str, Any]:
    name = input_config.dataset
    if name == NPZ:
        return data_sources.npz_facts(input_config.path)
    data_dir = resolve_data_dir(input_config.data_dir)
    return data_sources.tfds_facts(name.removeprefix(TFDS_PREFIX), data_dir)


def _recordable_facts(input_config) -> dict[str, Any]:
    """{'data_shape': after padding, 'num_classes': 0 without labels} read from the files."""
    facts = _read_file_facts(input_config)
    shape = facts['image_shape']
    if input_config.pad_to_32:
        shape = (32, 32, shape[-1])
    return {'data_shape': shape, 'num_classes': facts['num_classes']}


def _check_recorded(input_config, actual: dict[str, Any]) -> None:
    """Recorded `input.data_shape` / `input.num_classes` must match what the data say."""
    for key, value in actual.items():
        recorded = input_config.get(key)
        if recorded is None:
            continue
        recorded = tuple(int(d) for d in recorded) if key == 'data_shape' else int(recorded)
        value = tuple(int(d) for d in value) if key == 'data_shape' else int(value)
        if recorded != value:
            raise ValueError(
                f'input.{key}={recorded!r} is recorded in the config, but '
                f'{describe_dataset(input_config)} now gives {value!r}: the data changed since the '
                'run recorded them. Use the data the run was trained on, or start a new run (leave '
                f'input.{key} unset).'
            )


def check_support(
    likelihood: str, image: np.ndarray, max_value: int, input_config, split: str
) -> None:
    """The likelihood's support check of the images the model will see (`held_images`)."""
    try:
        stored_images.check_support(likelihood, image, max_value)
    except ValueError as e:
        if input_config.dataset == NPZ:
            where = f'{input_config.path}: {split + "_images"!r}'
        else:
            where = f'input.dataset={input_config.dataset!r} ({split} split)'
        raise ValueError(f'{where}: {e}') from None


def split_limit(input_config, split: str, available: int) -> int | None:
    """`input.num_<split>_examples` (None: all), refused when the split has fewer examples."""
    limit = input_config[f'num_{split}_examples']
    if limit is not None and limit > available:
        raise ValueError(
            f'input.num_{split}_examples={limit} exceeds the {available} examples of the '
            f'{describe_dataset(input_config)} {split} split.'
        )
    return limit


def held_split_images(
    image: np.ndarray, max_value: int, input_config, split: str, likelihood: str | None
) -> np.ndarray:
    """A split's images as read -> as held (`held_images`, with the split's own static
    binarisation seed), then the likelihood's support check (with binarize='none')."""
    image = held_images(image, max_value, input_config, seed=STATIC_BINARIZE_SEED[split])
    if likelihood is not None and input_config.binarize == 'none':
        check_support(likelihood, image, max_value, input_config, split)
    return image


def describe_dataset(input_config) -> str:
    """The data set as an error message names it."""
    if input_config.dataset == NPZ:
        return f'input.path={input_config.path!r}'
    return repr(input_config.dataset)


def _check_fits_32(input_config, height: int, width: int) -> None:
    """input.pad_to_32 pads images up to 32x32: larger ones are refused, naming the data set."""
    if height > 32 or width > 32:
        raise ValueError(
            f'input.pad_to_32=True: {describe_dataset(input_config)} images are '
            f'{height}x{width}, over 32x32.'
        )


def _is_tfds(name: str) -> bool:
    return name in TFDS_DATASETS or name.startswith(TFDS_PREFIX)


def held_images(image: np.ndarray, max_value: int, input_config, seed: int) -> np.ndarray:
    """[N, H, W, C] as read (0..max_value) -> as held in memory: uint8, bool, or float32.

    Never a reader's cached array (those are read-only). Binary data (max_value 1, except float
    `.npz` grey values) and the static binarisation's draws become bool; other uint8 stays uint8.
    """
    if input_config.pad_to_32:
        _check_fits_32(input_config, *image.shape[1:3])
    name = input_config.dataset
    # binarized_mnist is already 0/1, and Bernoulli(0/1) is the identity: skip the draw.
    if input_config.binarize == 'static' and name != 'binarized_mnist':
        return binarize_static(image, seed=seed, max_value=max_value)
    if name in FACTOR_DATASETS or (image.dtype == np.uint8 and max_value == 1):
        return image.astype(np.bool_)
    if image.dtype == np.uint8:
        # A reader's cached (read-only) array is copied; a freshly read .npz array is not.
        return image if image.flags.writeable else np.array(image)
    return image.astype(np.float32, copy=False)  # A float .npz (read afresh), in [0, 1].


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


def _check_name(name: str) -> None:
    if not is_dataset_name(name):
        raise ValueError(f'input.dataset={name!r} is not supported; allowed: {ALLOWED_NAMES}.')


def _is_positive_int(value) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool) and value > 0
