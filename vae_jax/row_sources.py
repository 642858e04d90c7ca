"""A split's rows, read where they are stored: row sources and a lazy array view of them.

A row source reads any rows of one split as `data.get_datasets` holds them (images as stored:
uint8, bool or float32; labels int32), without loading the split:

- `ArraySource`: arrays already in memory (the sets built in code, or any loaded split).
- `FileSource`: a TFDS split through `tfds.data_source` (`array_record` files), or a member of an
  uncompressed `.npz` memory-mapped (`npz_member`). Each read goes through the same checks and
  preprocessing as the loaded split, so it returns the same bits.

`StoredRows` is a numpy-like view of a source's images (`shape`, `dtype`, `ndim`, `len`): basic
slicing (`rows[:n]`, `rows[a:b]`) gives another view and reads nothing, as a numpy memmap does;
indexing with an integer (or boolean) array reads just those rows; `np.asarray(rows)` reads them
all (it works, and is what a streamed split avoids). `stored_split` gives a split as
`{'image': StoredRows, 'label': int32 [N]}` (labels are 4 bytes an example and read up front):
the streamed pipeline's test split (vae_jax/streaming.py), evaluated batch by batch
(`evaluation.evaluate_dataset`), so the k=5000 NLL of a test set larger than memory holds one
batch of its rows at a time.
"""

from __future__ import annotations

import math
import zipfile

import ml_collections
import numpy as np

from vae_jax import data, data_sources

SPLITS = ('train', 'test')
# Rows per read when a view is read whole (`np.asarray`), and labels per TFDS read.
READ_BLOCK = 4096


def from_files(name: str) -> bool:
    """Whether `input.dataset` is stored in files that can be read row by row (npz, TFDS)."""
    return name == data.NPZ or name in data.TFDS_DATASETS or name.startswith(data.TFDS_PREFIX)


def num_records(input_config: ml_collections.ConfigDict, split: str = 'train') -> int:
    """Examples in a split of a set stored in files, from its headers (before any truncation).

    Raises:
      FileNotFoundError: no such `.npz`, or a TFDS set not prepared (saying where it looked).
    """
    if input_config.dataset == data.NPZ:
        resolved = data_sources.resolve_npz_path(input_config.path)
        return data_sources.npz_headers(input_config.path, resolved)[f'{split}_images'][0][0]
    name = input_config.dataset.removeprefix(data.TFDS_PREFIX)
    data_dir = data.resolve_data_dir(input_config.data_dir)
    builder = data_sources.tfds_builder(name, data_dir)
    if not builder.is_prepared():
        raise FileNotFoundError(data_sources.not_prepared_message(name, builder, data_dir))
    return builder.info.splits[split].num_examples


class ArraySource:
    """Rows of arrays held in memory (the sets built in code, or any loaded split)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels
        self.data_shape = tuple(images.shape[1:])
        self.dtype, self.row_shape = images.dtype, tuple(images.shape[1:])

    def __len__(self) -> int:
        return len(self.images)

    def read(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """rows [b] int -> (images [b, *data_shape], labels [b] int32), as stored."""
        return self.images[rows], self.labels[rows]

    def all_labels(self) -> np.ndarray:
        """int32 [N]: every label of the split."""
        return np.asarray(self.labels, np.int32)


class FileSource:
    """Rows of one split of a TFDS set (`tfds.data_source`) or of a memory-mapped `.npz` member.

    Each read converts the rows as stored in the files (uint8 / bool / float) into the rows
    `data.get_datasets` holds (`data.held_images`, the split's own static-binarisation seed)
    with the same function, and checks them as it does, so a streamed split holds the same bits.
    The first `num_train_examples` / `num_test_examples` rows of the split are its rows.

    Attributes:
      dtype, row_shape: of the stored rows a read returns (read from row 0 when opened).
      data_shape: one example's shape as the model sees it (`data.data_shape`, padded).
    """

    def __init__(
        self,
        input_config: ml_collections.ConfigDict,
        likelihood: str | None = None,
        split: str = 'train',
    ):
        if split not in SPLITS:
            raise ValueError(f'FileSource: split={split!r} is invalid; allowed: train, test.')
        self.input_config, self.likelihood, self.split = input_config, likelihood, split
        name = input_config.dataset
        if input_config.binarize == 'static' and name != 'binarized_mnist':
            raise ValueError(
                f"config.input.binarize='static' draws one binarisation over the whole {split} "
                "split when it is loaded, which input.pipeline='stream' never does; allowed "
                "with 'stream': binarize='dynamic' (a fresh draw at every use, the IWAE "
                "protocol) or 'none', or input.pipeline='device'"
            )
        if name == data.NPZ:
            resolved = data_sources.resolve_npz_path(input_config.path)
            self._images = npz_member(input_config.path, resolved, f'{split}_images')
            # As data_sources.read_npz: uint8 0..255; bool (read as 0/1) and float: 1.
            self._max_value = 255 if self._images.dtype == np.uint8 else 1
            headers = data_sources.npz_headers(input_config.path, resolved)
            train, test = (headers[key][1] for key in data_sources.NPZ_IMAGE_KEYS)
            if np.dtype(train).kind != np.dtype(test).kind:  # As data_sources.read_npz.
                raise ValueError(
                    f"{input_config.path}: 'train_images' is {train} but 'test_images' is "
                    f'{test}; store both splits alike (uint8 0..255, or float in [0, 1]).'
                )
            if f'{split}_labels' in headers:
                with np.load(resolved, allow_pickle=False) as npz:
                    labels = npz[f'{split}_labels']
                self._labels = data_sources.check_labels(
                    input_config.path, f'{split}_labels', labels
                )
            else:
                self._labels = np.zeros((len(self._images),), np.int64)
            self._tfds = None
            self._length = len(self._images)
        else:
            import tensorflow_datasets as tfds  # Slow to import; only the TFDS sets need it.

            tfds_name = name.removeprefix(data.TFDS_PREFIX)
            data_dir = data.resolve_data_dir(input_config.data_dir)
            num_classes = data.dataset_info(input_config)['num_classes']
            if name in data.TFDS_DATASETS:
                self._has_labels = data.dataset_info(name)['has_labels']
                self._max_value = data.TFDS_MAX_VALUE[name]
            else:
                self._has_labels, self._max_value = num_classes > 0, 255
            num_records(input_config, split)  # A missing data set: the message saying where.
            self._tfds_args = dict(name=tfds_name, split=split, data_dir=data_dir, download=False)
            self._tfds = tfds.data_source(**self._tfds_args)
            self._length = len(self._tfds)
        limit = data.split_limit(input_config, split, self._length)
        if limit is not None:
            self._length = limit
        self.data_shape = data.data_shape(input_config)
        first = self.read(np.zeros((1,), np.int64))[0]
        self.dtype, self.row_shape = first.dtype, tuple(first.shape[1:])

    def __len__(self) -> int:
        return self._length

    def read(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """rows [b] int -> (images [b, *stored shape], labels [b] int32), as `get_datasets`'."""
        config = self.input_config
        if self._tfds is None:
            # Fancy indexing of a memmap reads just these rows; sorted, the reads run forward.
            order = np.argsort(rows, kind='stable')
            images = np.empty((len(rows), *self._images.shape[1:]), self._images.dtype)
            images[order] = self._images[rows[order]]
            images = data_sources.check_images(config.path, f'{self.split}_images', images)
            labels = self._labels[rows]
        else:
            records = self._tfds.__getitems__([int(r) for r in rows])
            images = np.stack([r['image'] for r in records])
            labels = np.asarray([r['label'] if self._has_labels else 0 for r in records], np.int64)
        images = data.held_split_images(
            images, self._max_value, config, self.split, self.likelihood
        )
        return images, labels.astype(np.int32)

    def all_labels(self) -> np.ndarray:
        """int32 [N]: every label of the split (TFDS: read without decoding the images)."""
        if self._tfds is None:
            return self._labels[: self._length].astype(np.int32)
        labels = np.zeros((self._length,), np.int32)
        if not self._has_labels:
            return labels
        import tensorflow_datasets as tfds

        # The encoded image bytes are read but not decoded (decoding is most of a read's time).
        skip = tfds.data_source(**self._tfds_args, decoders={'image': tfds.decode.SkipDecoding()})
        for start in range(0, self._length, READ_BLOCK):
            stop = min(start + READ_BLOCK, self._length)
            labels[start:stop] = [r['label'] for r in skip.__getitems__(list(range(start, stop)))]
        return labels


class StoredRows:
    """A split's stored images, read from a row source only when indexed (a numpy-like view).

    Basic slicing (`rows[:n]`, `rows[a:b:s]`) returns a view and reads nothing; an int or an
    integer / boolean array index reads just those rows (np.ndarray, as stored); `np.asarray`
    reads all rows, in blocks of `READ_BLOCK`.

    Args:
      source: a row source (`FileSource`, `ArraySource`): `len`, `dtype`, `row_shape` and
        `read(rows [b] int) -> (images [b, *row_shape], labels [b])`.
      rows: the source's rows this view shows (default all).
    """

    def __init__(self, source, rows: range | None = None):
        self.source = source
        self.rows = range(len(source)) if rows is None else rows

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.source.row_shape)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.source.dtype)

    @property
    def ndim(self) -> int:
        return 1 + len(self.source.row_shape)

    @property
    def nbytes(self) -> int:
        """Bytes of the rows once read (none are held)."""
        return math.prod(self.shape) * self.dtype.itemsize

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return f'StoredRows(shape={self.shape}, dtype={self.dtype}, source={self.source!r})'

    def __getitem__(self, key) -> StoredRows | np.ndarray:
        if isinstance(key, slice):
            return StoredRows(self.source, self.rows[key])
        if isinstance(key, int | np.integer) and not isinstance(key, bool):
            return self._read(np.asarray([key]))[0]
        index = np.asarray(key)
        if index.dtype == np.bool_:
            if index.shape != (len(self),):
                raise IndexError(
                    f'StoredRows: a boolean index of shape {index.shape} for {len(self)} rows; '
                    f'allowed: shape ({len(self)},).'
                )
            index = np.flatnonzero(index)
        elif index.dtype.kind not in 'iu':
            raise IndexError(
                f'StoredRows: index {key!r} is not supported; allowed: a slice (a view, nothing '
                'read), an int, or an integer or boolean array of rows.'
            )
        return self._read(index)

    def _read(self, index: np.ndarray) -> np.ndarray:
        """index [...] int (negatives count from the end) -> images [..., *row_shape]."""
        n = len(self.rows)
        if index.size and (index.min() < -n or index.max() >= n):
            bad = index[(index < -n) | (index >= n)].flat[0]
            raise IndexError(f'StoredRows: index {bad} is out of bounds for {n} rows.')
        if index.size == 0:
            return np.empty((*index.shape, *self.source.row_shape), self.dtype)
        index = np.where(index < 0, index + n, index).astype(np.int64)
        rows = self.rows.start + index.reshape(-1) * self.rows.step
        images = self.source.read(rows)[0]
        return images.reshape(*index.shape, *images.shape[1:])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        if copy is False:
            raise ValueError('StoredRows: reading the rows makes a new array (copy=False).')
        out = np.empty(self.shape, self.dtype)
        for start in range(0, len(self), READ_BLOCK):
            stop = min(start + READ_BLOCK, len(self))
            out[start:stop] = self._read(np.arange(start, stop))
        return out if dtype is None else out.astype(dtype)


def stored_split(
    input_config: ml_collections.ConfigDict, split: str, likelihood: str | None = None
) -> dict[str, StoredRows | np.ndarray]:
    """A split of a set stored in files, streamed: its rows equal `data.get_datasets`'.

    Args:
      input_config: `config.input` (npz or TFDS; `input.binarize` not 'static').
      split: 'train' or 'test'.
      likelihood: `model.likelihood`, for the support check of each read (binarize='none').

    Returns:
      {'image': StoredRows [N, ...] as stored, 'label': int32 [N]}, N after truncation.
    """
    source = FileSource(input_config, likelihood, split)
    return {'image': StoredRows(source), 'label': source.all_labels()}


def npz_member(path: str, resolved: str, key: str) -> np.ndarray:
    """The array `key` of an uncompressed `.npz`, memory-mapped (read-only, no rows read).

    `np.load(..., mmap_mode='r')` memory-maps `.npy` files only; for an `.npz` it ignores
    mmap_mode and reads each member whole. An uncompressed member (np.savez) is a plain `.npy`
    at an offset inside the zip file, so it is mapped there; a compressed member (np.savez_
    compressed) has no such bytes to map.

    Raises:
      ValueError: the member is compressed, naming the file, the key and what to do.
    """
    member = f'{key}.npy'
    with zipfile.ZipFile(resolved) as archive:
        info = archive.getinfo(member)
    if info.compress_type != zipfile.ZIP_STORED:
        raise ValueError(
            f"{path}: {key!r} is compressed (np.savez_compressed), and input.pipeline='stream' "
            'reads the split row by row from a memory map, which needs it stored '
            "uncompressed; allowed: save the file with np.savez, or input.pipeline='device' "
            '(reads the whole file into memory)'
        )
    with open(resolved, 'rb') as f:
        f.seek(info.header_offset)
        local = f.read(30)  # The zip local file header: its name and extra field follow.
        name_len = int.from_bytes(local[26:28], 'little')
        extra_len = int.from_bytes(local[28:30], 'little')
        f.seek(info.header_offset + 30 + name_len + extra_len)
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
        offset = f.tell()
    return np.memmap(
        resolved, dtype=dtype, mode='r', shape=shape, order='F' if fortran else 'C', offset=offset
    )


def load_test_split(
    input_config: ml_collections.ConfigDict, likelihood: str | None = None
) -> dict[str, np.ndarray]:
    """The test split as `data.get_datasets` returns it, without reading the train split's rows.

    TFDS sets: `get_datasets` with one train record. `npz`: the test member (memory-mapped and
    then read, only the first `num_test_examples` rows; a compressed member is read whole)
    through the same checks and preprocessing.
    """
    if input_config.dataset != data.NPZ:
        config = ml_collections.ConfigDict(input_config.to_dict())
        config.num_train_examples = 1
        return data.get_datasets(config, likelihood=likelihood)[1]
    path = input_config.path
    resolved = data_sources.resolve_npz_path(path)
    with zipfile.ZipFile(resolved) as archive:
        compressed = archive.getinfo('test_images.npy').compress_type != zipfile.ZIP_STORED
    if compressed:  # np.savez_compressed: no bytes to map; np.load reads this member only.
        with np.load(resolved, allow_pickle=False) as npz:
            stored = npz['test_images']
    else:
        stored = npz_member(path, resolved, 'test_images')
    stored = stored[: data.split_limit(input_config, 'test', len(stored))]
    images = data_sources.check_images(path, 'test_images', np.asarray(stored))
    max_value = 255 if stored.dtype == np.uint8 else 1
    images = data.held_split_images(images, max_value, input_config, 'test', likelihood)
    headers = data_sources.npz_headers(path, resolved)
    labels = np.zeros((len(images),), np.int64)
    if 'test_labels' in headers:
        with np.load(resolved, allow_pickle=False) as npz:
            labels = data_sources.check_labels(path, 'test_labels', npz['test_labels'])
        labels = labels[: len(images)]
    return {'image': images, 'label': labels.astype(np.int32)}


def evaluation_split(
    input_config: ml_collections.ConfigDict, split: str, *, stream: bool = False
) -> tuple[dict[str, np.ndarray | StoredRows], int]:
    """One split for evaluation, and the number of training examples.

    The test split of a set stored in files is read without the train split (its size comes
    from the file headers or the TFDS builder's info), so evaluating a model of a large data set
    holds only the test split; with `stream` (the run's `input.pipeline` resolves to 'stream',
    `streaming.streams_from_files`), either split is a `StoredRows` view, read batch by batch,
    and nothing of it is held. Its rows equal `data.get_datasets`'s either way.

    Args:
      input_config: `config.input`.
      split: 'test' or 'train'.
      stream: read the split from its files as it is evaluated (a set stored in files only).

    Returns:
      ({'image', 'label'} of `split`, as `data.get_datasets` returns it or a `stored_split`;
       num_train_examples).
    """
    if from_files(input_config.dataset) and (split == 'test' or stream):
        count = num_records(input_config, 'train')
        if input_config.num_train_examples is not None:
            count = min(count, input_config.num_train_examples)
        if stream:
            return stored_split(input_config, split), count
        return load_test_split(input_config), count
    train, test = data.get_datasets(input_config)
    return (test if split == 'test' else train), len(train['image'])
