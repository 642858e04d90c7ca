"""Readers of stored data sets for vae_jax/data.py: TFDS data dirs, `.npz` files, `digits`.

Readers return the images as stored (uint8 [N, H, W, C], or float in [0, 1] from an `.npz`) and
int labels; data.py truncates, scales, binarises and pads them. The facts a model needs (one
image's shape, the number of classes) are read without the arrays wherever the format allows:
from a TFDS builder's `dataset_info.json`, or from the `.npy` headers inside an `.npz` file.

Where TFDS data live (`resolve_data_dir`): the given dir (`input.data_dir`, or an evaluation
`--data_dir` flag), else `$TFDS_DATA_DIR`, else TFDS's own default `~/tensorflow_datasets`. A
run's config records the data set by name, so the same run finds its data on another machine.

`.npz` layout: `train_images` and `test_images` ([N, H, W, C], or [N, H, W] for one channel;
uint8 0..255, bool, or float already in [0, 1]), optionally `train_labels` and `test_labels`
(int [N], values >= 0; both or neither). No other keys, so a misspelt key is an error, not an
ignored array.
"""

from __future__ import annotations

import functools
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_DATA_DIR = '~/tensorflow_datasets'  # TFDS's own default data dir.
NPZ_IMAGE_KEYS = ('train_images', 'test_images')
NPZ_LABEL_KEYS = ('train_labels', 'test_labels')
NPZ_KEYS = NPZ_IMAGE_KEYS + NPZ_LABEL_KEYS
_DIGITS_SPLIT_SEED = 0
_DIGITS_TEST_FRACTION = 0.2
_READ_CHUNK = 10_000  # records per batched read: bounds the list of decoded dicts held at once.


def resolve_data_dir(data_dir: str | None = None) -> str:
    """Where TFDS data sets are read from: `data_dir`, else `$TFDS_DATA_DIR`, else the default.

    The order lets a run recorded on one machine be read on another: its config leaves
    `input.data_dir` unset, and each machine says where its data are (`$TFDS_DATA_DIR`, or a
    flag that evaluation passes here). Local paths are made absolute against the current
    directory; remote ones (`gs://...`) are left alone.

    Args:
      data_dir: an explicit TFDS data dir (config key `input.data_dir` or a command-line flag),
        or None.

    Returns:
      The data dir as a string (`~/tensorflow_datasets`, expanded, when nothing is set).
    """
    data_dir = data_dir or os.environ.get('TFDS_DATA_DIR') or DEFAULT_DATA_DIR
    data_dir = os.fspath(data_dir)
    if '://' not in data_dir:
        data_dir = os.path.abspath(os.path.expanduser(data_dir))
    return data_dir


def tfds_builder(name: str, data_dir: str):
    """`tfds.builder(name, data_dir=data_dir)`, with a clear error for a name TFDS cannot find.

    Raises:
      ValueError: neither a data set registered in the installed TFDS nor one prepared in
        `data_dir`.
    """
    import tensorflow_datasets as tfds  # Imported here: the embedded/toy sets do not need it.

    try:
        return tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError:
        found = sorted(p.name for p in _listdir(data_dir) if p.is_dir())
        raise ValueError(
            f'input.dataset: TFDS data set {name!r} was not found. Tried: the data sets registered '
            f'in tensorflow-datasets {tfds.__version__} (see `tfds.list_builders()`), and a '
            f'prepared copy in data dir {data_dir!r} (holds: {", ".join(found) or "nothing"}). '
            'Check the spelling (TFDS names are lower case, e.g. cifar10, svhn_cropped), or '
            f'prepare it: `tfds build {name} --data_dir {data_dir} --file_format array_record` on '
            'a machine with TensorFlow and internet access, or copy a prepared data dir there.'
        ) from None


def tfds_facts(name: str, data_dir: str) -> dict[str, Any]:
    """Facts of a TFDS image data set from its builder's info (no records are read).

    The set must have an `image` feature of fixed shape and dtype uint8, and may have a
    `label` ClassLabel feature.

    Args:
      name: a TFDS name, optionally with config and version (`cifar10`, `mnist:3.0.1`).
      data_dir: from `resolve_data_dir`.

    Returns:
      `{'image_shape': (H, W, C), 'num_classes': int}`; num_classes is 0 without a label.

    Raises:
      ValueError: unknown name, or not an image set this loader can read.
    """
    import tensorflow_datasets as tfds

    features = tfds_builder(name, data_dir).info.features
    image = features['image'] if 'image' in features else None
    shape = tuple(getattr(image, 'shape', ()) or ())
    if (
        not isinstance(image, tfds.features.Image)
        or len(shape) != 3
        or not all(isinstance(d, int) for d in shape)
        or np.dtype(image.np_dtype) != np.uint8
    ):
        raise ValueError(
            f'input.dataset: TFDS data set {name!r} has features {dict(features)}; this loader '
            "reads an 'image' feature of fixed shape [H, W, C] and dtype uint8 (and an optional "
            "'label' ClassLabel)."
        )
    num_classes = 0
    if 'label' in features:
        num_classes = getattr(features['label'], 'num_classes', None)
        if not isinstance(features['label'], tfds.features.ClassLabel) or not num_classes:
            raise ValueError(
                f"input.dataset: TFDS data set {name!r} has a 'label' feature "
                f'{features["label"]} that is not a ClassLabel; this loader reads class labels.'
            )
    return {'image_shape': shape, 'num_classes': num_classes}


@functools.lru_cache(maxsize=8)  # A few splits; each full MNIST-size split is 8-47 MB of uint8.
def read_tfds_split(
    name: str,
    split: str,
    data_dir: str,
    num_examples: int | None,
    has_labels: bool,
    download: bool,
) -> dict[str, np.ndarray]:
    """Reads the first `num_examples` (None: all) records of a TFDS split.

    Args:
      name: a TFDS name.
      split: 'train' or 'test'.
      data_dir: from `resolve_data_dir`.
      num_examples: how many records to read from the start, or None for all.
      has_labels: read the `label` feature (else labels are 0).
      download: let TFDS download and prepare a set that is not prepared (needs internet).

    Returns:
      Read-only `{'image': uint8 [N, H, W, C], 'label': int64 [N]}` (cached per process).

    Raises:
      FileNotFoundError: not prepared in `data_dir` and `download` is False.
      ValueError: unknown name, or the split does not exist.
    """
    import tensorflow_datasets as tfds  # Imported here: the embedded/toy sets do not need it.

    builder = tfds_builder(name, data_dir)
    if not download and not builder.is_prepared():
        raise FileNotFoundError(not_prepared_message(name, builder, data_dir))
    splits = builder.info.splits if builder.is_prepared() else {}
    if splits and split not in splits:
        raise ValueError(
            f'input.dataset: TFDS data set {name!r} has splits '
            f'{", ".join(sorted(splits))}; this loader reads {split!r}.'
        )
    source = tfds.data_source(name, split=split, data_dir=data_dir, download=download)
    n = len(source) if num_examples is None else min(num_examples, len(source))
    image = np.empty((n, *source.dataset_info.features['image'].shape), np.uint8)
    label = np.zeros((n,), np.int64)
    # Batched __getitems__ reads the array_record file in one call per chunk; decoding (PNG, in
    # tfds/PIL) is per record either way and dominates (~90 us per 28x28 image).
    for start in range(0, n, _READ_CHUNK):
        stop = min(start + _READ_CHUNK, n)
        records = source.__getitems__(list(range(start, stop)))
        image[start:stop] = np.stack([r['image'] for r in records])
        if has_labels:
            label[start:stop] = [r['label'] for r in records]
    image.flags.writeable = False
    label.flags.writeable = False
    return {'image': image, 'label': label}


def read_tfds(
    name: str,
    data_dir: str,
    limits: dict[str, int | None],
    download: bool,
    *,
    has_labels: bool | None = None,
    max_value: int | None = None,
) -> tuple[dict[str, dict[str, np.ndarray]], int]:
    """The train and test splits of a TFDS image set, as stored.

    Args:
      name: a TFDS name.
      data_dir: from `resolve_data_dir`.
      limits: {'train': N or None, 'test': N or None}: records to read from the start.
      download: let TFDS download and prepare a set that is not prepared.
      has_labels, max_value: a curated set's facts (whether it has labels, the stored value of
        a white pixel). None: a generic set, whose labels come from the builder's info and
        whose uint8 images are 0..255 (a set storing 0/1 images is refused, since scaling it
        by 1/255 would give near-black images).

    Returns:
      `({'train': {'image': uint8 [N, H, W, C], 'label': int64 [N]}, 'test': ...}, max_value)`.

    Raises:
      FileNotFoundError: not prepared and `download` is False.
      ValueError: unknown name, missing split, or pixel values that do not fit `max_value`.
    """
    generic = max_value is None
    if generic:
        has_labels = tfds_facts(name, data_dir)['num_classes'] > 0
        max_value = 255  # TFDS Image features are uint8 0..255.
    splits = {
        split: read_tfds_split(name, split, data_dir, limit, has_labels, download)
        for split, limit in limits.items()
    }
    for split, arrays in splits.items():
        image = arrays['image']
        if image.size and image.max() > max_value:
            raise ValueError(
                f'TFDS {name} in {data_dir} holds pixel values up to {image.max()}, expected at '
                f'most {max_value}; the prepared data set is not what this loader expects.'
            )
        if generic and image.size and image.max() <= 1:
            raise ValueError(
                f'TFDS {name} in {data_dir}: the {split} images hold only the values 0 and 1 '
                '(a binary set stored as 0/1), but TFDS images are read as 0..255. For '
                "binarized MNIST use input.dataset='binarized_mnist'; for another binary set, "
                "save it as an .npz of bool images and use input.dataset='npz'."
            )
    return splits, max_value


def not_prepared_message(name: str, builder, data_dir: str) -> str:
    """Says where a TFDS set was looked for and how to prepare it."""
    dataset_dir = builder.data_path.parent
    found = sorted(p.name for p in _listdir(dataset_dir))
    return (
        f'TFDS data set {name!r} (version {builder.version}) is not prepared in data dir '
        f'{data_dir!r}: looked for {builder.data_path}/dataset_info.json (versions found in '
        f'{dataset_dir}: {", ".join(found) or "none"}). The data dir comes from input.data_dir, '
        f'else $TFDS_DATA_DIR, else {DEFAULT_DATA_DIR}. Prepare it on a machine with TensorFlow '
        f'and internet access: `tfds build {name} --data_dir {data_dir} --file_format '
        'array_record` (tfds.data_source reads array_record only), or set '
        'input.download=True to let TFDS download and prepare it here, or copy a prepared data '
        'dir from another machine and point input.data_dir or $TFDS_DATA_DIR at it.'
    )


@functools.lru_cache(maxsize=1)
def load_digits() -> dict[str, dict[str, np.ndarray]]:
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


def resolve_npz_path(path: str) -> str:
    """The absolute path of `input.path` (relative paths count from the current directory).

    Raises:
      FileNotFoundError: no such file, naming the path as given and as resolved.
    """
    expanded = os.path.expanduser(os.fspath(path))
    resolved = os.path.abspath(expanded)
    if not os.path.isfile(resolved):
        where = (
            ''
            if os.path.isabs(expanded)
            else f' (relative to the current directory {os.getcwd()!r}: {resolved!r})'
        )
        raise FileNotFoundError(
            f'input.path={path!r}: no such file{where}. Give the path of an .npz file with '
            f'arrays {", ".join(NPZ_IMAGE_KEYS)} (and optionally {", ".join(NPZ_LABEL_KEYS)}).'
        )
    return resolved


def npz_facts(path: str) -> dict[str, Any]:
    """Facts of an `.npz` data set from its array headers and labels (images are not read).

    Args:
      path: `input.path`, as given.

    Returns:
      `{'image_shape': (H, W, C), 'num_classes': int}`; num_classes is max label + 1, or 0
      without labels.

    Raises:
      FileNotFoundError: no such file.
      ValueError: not a readable .npz, wrong keys, or shapes/labels that do not fit together.
    """
    resolved = resolve_npz_path(path)
    headers = npz_headers(path, resolved)
    shapes = {k: shape for k, (shape, _) in headers.items()}
    image_shape = _check_npz_shapes(path, shapes)
    num_classes = 0
    if NPZ_LABEL_KEYS[0] in headers:
        with np.load(resolved, allow_pickle=False) as npz:
            labels = {key: check_labels(path, key, npz[key]) for key in NPZ_LABEL_KEYS}
        num_classes = 1 + max(int(v.max(initial=0)) for v in labels.values())
    return {'image_shape': image_shape, 'num_classes': num_classes}


def read_npz(path: str) -> dict[str, dict[str, np.ndarray]]:
    """Reads and checks an `.npz` data set (layout in the module docstring).

    Args:
      path: `input.path`, as given (named in every error).

    Returns:
      `{'train': {'image': [N, H, W, C], 'label': int64 [N]}, 'test': ...}`; images uint8
      (0..255) or float32 in [0, 1] (bool is read as uint8 0/1 and reported with max value 1
      in `'max_value'`); labels 0 when the file has none. Also `'max_value'`: the stored value
      of a white pixel (255, or 1 for float and bool images).

    Raises:
      FileNotFoundError: no such file.
      ValueError: naming the file, the key and the bad value: unknown or missing keys, bad
        shapes or dtypes, float values outside [0, 1] or non-finite, bad labels.
    """
    resolved = resolve_npz_path(path)
    headers = npz_headers(path, resolved)
    _check_npz_shapes(path, {k: shape for k, (shape, _) in headers.items()})
    dtypes = {k: dtype for k, (_, dtype) in headers.items()}
    kinds = {np.dtype(dtypes[key]).kind for key in NPZ_IMAGE_KEYS}
    out: dict[str, Any] = {}
    with np.load(resolved, allow_pickle=False) as npz:
        for split, image_key in zip(('train', 'test'), NPZ_IMAGE_KEYS, strict=True):
            image = check_images(path, image_key, npz[image_key])
            label_key = f'{split}_labels'
            if label_key in npz.files:
                label = check_labels(path, label_key, npz[label_key]).astype(np.int64)
            else:
                label = np.zeros((len(image),), np.int64)
            out[split] = {'image': image, 'label': label}
    if len(kinds) > 1:
        raise ValueError(
            f'{path}: {NPZ_IMAGE_KEYS[0]!r} is {dtypes[NPZ_IMAGE_KEYS[0]]} but '
            f'{NPZ_IMAGE_KEYS[1]!r} is {dtypes[NPZ_IMAGE_KEYS[1]]}; store both splits alike '
            '(uint8 0..255, or float in [0, 1]).'
        )
    out['max_value'] = 255 if np.dtype(dtypes[NPZ_IMAGE_KEYS[0]]) == np.uint8 else 1
    return out


def npz_headers(path: str, resolved: str) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """{key: (shape, dtype)} of each array in the .npz, read from the .npy headers only."""
    try:
        with zipfile.ZipFile(resolved) as archive:
            headers = {}
            for member in archive.namelist():
                key = member.removesuffix('.npy')
                with archive.open(member) as f:
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
                    else:
                        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
                headers[key] = (tuple(int(d) for d in shape), dtype)
    except (zipfile.BadZipFile, ValueError, OSError) as e:
        raise ValueError(
            f'{path}: cannot be read as an .npz file ({e}); write it with np.savez or '
            'np.savez_compressed.'
        ) from e
    unknown = sorted(set(headers) - set(NPZ_KEYS))
    missing = [k for k in NPZ_IMAGE_KEYS if k not in headers]
    if unknown or missing:
        raise ValueError(
            f'{path}: holds arrays {sorted(headers)}; '
            + (f'missing {missing}; ' if missing else '')
            + (f'unexpected {unknown}; ' if unknown else '')
            + f'allowed keys: {", ".join(NPZ_IMAGE_KEYS)} (required), '
            f'{", ".join(NPZ_LABEL_KEYS)} (optional, both or neither).'
        )
    labels = [k for k in NPZ_LABEL_KEYS if k in headers]
    if len(labels) == 1:
        other = [k for k in NPZ_LABEL_KEYS if k not in headers][0]
        raise ValueError(
            f'{path}: has {labels[0]!r} but not {other!r}; give labels for both splits or '
            'for neither.'
        )
    for key, (_, dtype) in headers.items():
        if dtype.hasobject:
            raise ValueError(f'{path}: {key!r} holds Python objects ({dtype}); use numbers.')
    return headers


def _check_npz_shapes(path: str, shapes: dict[str, tuple[int, ...]]) -> tuple[int, ...]:
    """Checks the shapes fit together; returns one image's [H, W, C]."""
    image_shapes = {}
    for key in NPZ_IMAGE_KEYS:
        shape = shapes[key]
        if len(shape) not in (3, 4) or 0 in shape:
            raise ValueError(
                f'{path}: {key!r} has shape {shape}; allowed: [N, H, W, C] or [N, H, W] '
                '(one channel), with no empty axis.'
            )
        image_shapes[key] = shape[1:] if len(shape) == 4 else (*shape[1:], 1)
    train, test = (image_shapes[k] for k in NPZ_IMAGE_KEYS)
    if train != test:
        raise ValueError(
            f'{path}: {NPZ_IMAGE_KEYS[0]!r} holds images of shape {train} but '
            f'{NPZ_IMAGE_KEYS[1]!r} of shape {test}; both splits need one image shape.'
        )
    for image_key, label_key in zip(NPZ_IMAGE_KEYS, NPZ_LABEL_KEYS, strict=True):
        if label_key not in shapes:
            continue
        label_shape, num_images = shapes[label_key], shapes[image_key][0]
        if len(label_shape) != 1:
            raise ValueError(
                f'{path}: {label_key!r} has shape {label_shape}; allowed: [N], one int per image.'
            )
        if label_shape[0] != num_images:
            raise ValueError(
                f'{path}: {label_key!r} has {label_shape[0]} entries but {image_key!r} has '
                f'{num_images}.'
            )
    return train


def check_images(path: str, key: str, image: np.ndarray) -> np.ndarray:
    """An `.npz` member's images, checked: uint8 / bool / float in [0, 1] -> [N, H, W, C] uint8
    or float32 ([N, H, W] gains C = 1); anything else is refused naming `path` and `key`."""
    if image.ndim == 3:
        image = image[..., None]
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.bool_:
        return image.astype(np.uint8)
    if image.dtype.kind != 'f':
        raise ValueError(
            f'{path}: {key!r} has dtype {image.dtype}; allowed: uint8 (0..255, scaled to [0, 1]), '
            'bool, or float already in [0, 1]. Convert, e.g. with .astype(np.uint8) for values '
            '0..255.'
        )
    finite = np.isfinite(image)
    if not finite.all():
        index = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise ValueError(
            f'{path}: {key!r} holds {int((~finite).sum())} non-finite values (e.g. '
            f'{image[index]} at index {index}).'
        )
    outside = (image < 0) | (image > 1)
    if outside.any():
        index = tuple(int(i) for i in np.argwhere(outside)[0])
        raise ValueError(
            f'{path}: {key!r} is {image.dtype} with values in [{image.min():g}, {image.max():g}] '
            f'(e.g. {image[index]:g} at index {index}); float images must already lie in '
            '[0, 1] (store 0..255 as uint8 to have them scaled).'
        )
    return image.astype(np.float32)


def check_labels(path: str, key: str, label: np.ndarray) -> np.ndarray:
    """An `.npz` member's labels [N], checked: integer class ids >= 0, else refused naming
    `path` and `key`."""
    if label.dtype.kind not in 'iu':
        raise ValueError(
            f'{path}: {key!r} has dtype {label.dtype}; allowed: an integer dtype (class ids).'
        )
    if label.size and label.min() < 0:
        index = int(np.argmin(label))
        raise ValueError(
            f'{path}: {key!r} holds {label[index]} at index {index}; class ids must be >= 0.'
        )
    return label


def _listdir(path) -> list[Path]:
    path = Path(path)  # A remote data dir (gs://...) is not a local dir: lists nothing.
    return list(path.iterdir()) if path.is_dir() else []
