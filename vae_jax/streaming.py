"""The streamed input pipeline: each step's rows read from the data set's files, in the same order.

`input.pipeline` chooses how training batches reach the jitted step:

- 'device': the train split is put on the devices once, and each chunk of steps gathers its
  rows there (`steps.train_chunk`). Fastest while the split fits. On D > 1 devices each holds
  ceil(N / D) rows and each process reads only its own devices' rows (vae_jax/sharded_data.py).
- 'stream': a Grain pipeline reads the rows of each step from a row source (`open_train_source`:
  TFDS `array_record` files through `tfds.data_source`, the members of an uncompressed `.npz`
  memory-mapped, or the arrays in memory for the sets built in code), several steps ahead in
  background threads, and each chunk of steps receives them pre-gathered, [num_steps, B, ...]
  (`train_chunk_rows`, the same `steps.train_steps` loop as on the device).
- 'auto': 'device' when one device's part of the train split, as stored (ceil(N / D) of the N
  rows), fits `input.device_budget_gb`, else 'stream' (`choose_pipeline`).

Order: step t reads rows (t mod S) B .. (t mod S) B + B - 1 of epoch t // S's permutation
`batches.epoch_permutation(data_key, epoch, N)`, computed once per epoch on the host CPU with
the same JAX function as the device path (same bits), so both pipelines train on the same
batches and, on one device, reach bit-identical parameters. The reader's position is a function
of the step alone: a resumed run starts the reader at the restored step and reads exactly the
rows an uninterrupted run reads; nothing about the reader is checkpointed.

Each host its shard: with several processes, process p reads only the rows of its own devices'
part of each global batch (`local_rows`), and the global batch is assembled from the processes'
parts with `jax.make_array_from_process_local_data`.

The rows a reader delivers are the STORED rows, as the device path's gather produces them from
the split `data.get_datasets` returns, so one step serves both pipelines. The row sources and the
test split's lazy view live in vae_jax/row_sources.py: when the train split streams from files,
the test split does too (a `StoredRows` view, evaluated one batch at a time).
"""

from __future__ import annotations

import functools
import math
import threading
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from vae_jax import backends, batches, data, data_sources, row_sources, steps
from vae_jax.row_sources import ArraySource, FileSource

# Grain's read-ahead: threads that read steps in parallel, and the most bytes of read-ahead rows
# held (at least one step, at most 2 * steps_per_call steps).
NUM_READ_THREADS = 2
PREFETCH_BYTES = 256 * 2**20
# Bytes per stored value of a split on the device: images stay as stored (uint8 / bool) until
# the step; a float .npz is held as float32 (`_stored_itemsize`).
_DEVICE_ITEMSIZE = 1


def choose_pipeline(input_config: ml_collections.ConfigDict, train_bytes: int | None) -> str:
    """'device' or 'stream' for `input.pipeline` ('auto' decides by `train_bytes`).

    Args:
      input_config: `config.input`.
      train_bytes: bytes of the train split that one device holds (None: unknown, 'device'):
        on D devices, ceil(N / D) of its N rows (`train_split_bytes`).
    """
    pipeline = input_config.get('pipeline', 'device')
    if pipeline != 'auto':
        return pipeline
    budget = float(input_config.device_budget_gb) * 1e9
    return 'device' if train_bytes is None or train_bytes <= budget else 'stream'


def streams_from_files(input_config: ml_collections.ConfigDict, num_devices: int = 1) -> bool:
    """Whether a set stored in files streams: `input.pipeline` resolved without reading its rows.

    'stream', or 'auto' over `input.device_budget_gb` (`choose_pipeline`, one device's share of
    `num_devices`), for an npz or TFDS set. Training then streams the train split and evaluates
    the test split as a `row_sources.StoredRows` view (`load_splits`), and `vae_jax.evaluate`
    reads its split the same way; a set built in memory never does (it is loaded whole anyway).
    """
    if input_config.get('pipeline', 'device') == 'device':
        return False
    if not row_sources.from_files(input_config.dataset):
        return False
    return choose_pipeline(input_config, train_split_bytes(input_config, num_devices)) == 'stream'


def train_split_bytes(input_config: ml_collections.ConfigDict, num_devices: int = 1) -> int | None:
    """Bytes of the train split one device holds, from file headers (None: a set built in memory).

    `npz` and TFDS sets (whose files can be streamed) are sized from their array headers or the
    builder's info, without reading images: ceil(N / num_devices) examples (the split is sharded
    along examples, vae_jax/sharded_data.py) x one example's size as stored on device.
    """
    name = input_config.dataset
    if not row_sources.from_files(name):
        return None
    count = row_sources.num_records(input_config, 'train')
    if input_config.num_train_examples is not None:
        count = min(count, input_config.num_train_examples)
    # The model's shape (padded with pad_to_32): an upper bound on the stored (unpadded) rows.
    count = -(-count // num_devices)  # ceil: the rows one device holds
    return count * math.prod(data.data_shape(input_config)) * _stored_itemsize(input_config)


def _stored_itemsize(input_config) -> int:
    """Bytes per value as `data.get_datasets` holds the split: 1 (uint8 / bool), 4 (float npz)."""
    if input_config.dataset == data.NPZ:
        resolved = data_sources.resolve_npz_path(input_config.path)
        _, dtype = data_sources.npz_headers(input_config.path, resolved)['train_images']
        return 4 if np.issubdtype(dtype, np.floating) else _DEVICE_ITEMSIZE
    return _DEVICE_ITEMSIZE


def load_splits(
    input_config: ml_collections.ConfigDict,
    likelihood: str | None = None,
    *,
    num_devices: int = 1,
    num_processes: int = 1,
) -> tuple[str, dict[str, np.ndarray] | None, dict[str, np.ndarray], Any]:
    """The pipeline `input.pipeline` resolves to, and the data it needs.

    Args:
      input_config: `config.input`.
      likelihood: `model.likelihood` (the support checks of `data.get_datasets`).
      num_devices: the devices of the run ('auto' budgets ceil(N / num_devices) rows a device).
      num_processes: with more than one, a set in files that stays on the devices is not read
        here: each process reads its own devices' rows from the returned source
        (`sharded_data.put_split`).

    Returns:
      (pipeline 'device' | 'stream', train split {'image', 'label'} or None when read from
       files row by row, test split (its 'image' a `row_sources.StoredRows` view when streamed
       from files), train row source or None when the split is loaded).
    """
    if streams_from_files(input_config, num_devices):
        source = FileSource(input_config, likelihood)
        return 'stream', None, row_sources.stored_split(input_config, 'test', likelihood), source
    # A static binarisation is drawn over the whole split as loaded (FileSource refuses it).
    by_rows = input_config.binarize != 'static' or input_config.dataset == 'binarized_mnist'
    if row_sources.from_files(input_config.dataset) and num_processes > 1 and by_rows:
        source = FileSource(input_config, likelihood)
        return 'device', None, row_sources.load_test_split(input_config, likelihood), source
    train, test = data.get_datasets(input_config, likelihood=likelihood)
    rows = -(-len(train['image']) // num_devices)  # ceil: the rows one device holds
    pipeline = choose_pipeline(input_config, rows * train['image'][:1].nbytes)
    source = ArraySource(train['image'], train['label']) if pipeline == 'stream' else None
    return pipeline, train, test, source


def open_train_source(
    input_config: ml_collections.ConfigDict,
    likelihood: str | None = None,
    train_data: dict[str, np.ndarray] | None = None,
) -> ArraySource | FileSource:
    """The train split as a row source: files where the set has them, else arrays in memory.

    Args:
      input_config: `config.input`.
      likelihood: `model.likelihood`, for the support check of each read (binarize='none').
      train_data: the loaded train split of a set built in memory ({'image', 'label'}).
    """
    if row_sources.from_files(input_config.dataset):
        return FileSource(input_config, likelihood)
    assert train_data is not None, 'a set built in memory streams from its loaded arrays'
    return ArraySource(train_data['image'], train_data['label'])


def local_rows(batch_sharding: NamedSharding, batch_size: int) -> slice:
    """The rows of each global batch that this process's devices hold: one contiguous slice.

    Raises:
      ValueError: the process's devices hold a non-contiguous part of the batch (a mesh whose
        devices are not grouped by process).
    """
    return batches.process_rows(
        batch_sharding, batch_size, f'each batch of {batch_size}', "input.pipeline='stream'"
    )


class HostPermutations:
    """Epoch permutations on the host CPU, each computed once (thread-safe; keeps the newest 2)."""

    def __init__(self, data_key: jax.Array, num_examples: int):
        cpu = jax.local_devices(backend='cpu')[0]
        self._key = jax.device_put(data_key, cpu)
        self._fn = jax.jit(functools.partial(batches.epoch_permutation, num_examples=num_examples))
        self._cpu = cpu
        self._cache: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def __call__(self, epoch: int) -> np.ndarray:
        with self._lock:
            perm = self._cache.get(epoch)
            if perm is None:
                arg = jax.device_put(np.int32(epoch), self._cpu)
                perm = self._cache[epoch] = np.asarray(self._fn(self._key, arg))
                while len(self._cache) > 2:  # Drop the oldest computed.
                    del self._cache[next(iter(self._cache))]
            return perm


class StreamReader:
    """Reads this process's rows of steps start, start + 1, ... with Grain, ahead of use.

    Attributes:
      rows_served: rows handed to the step so far (this process's part of each batch).
    """

    def __init__(
        self,
        source: ArraySource | FileSource,
        data_key: jax.Array,
        *,
        batch_size: int,
        rows: slice,
        start_step: int,
        stop_step: int,
        prefetch_steps: int,
    ):
        import grain  # A dependency of the streamed pipeline only.

        self.source, self.batch_size, self.rows = source, batch_size, rows
        self.steps_per_epoch = len(source) // batch_size
        self.permutation = HostPermutations(data_key, len(source))
        self.rows_served = 0
        self.next_step = start_step
        dataset = grain.MapDataset.range(start_step, max(stop_step, start_step)).map(self.read_step)
        options = grain.ReadOptions(
            num_threads=NUM_READ_THREADS, prefetch_buffer_size=max(prefetch_steps, 1)
        )
        self._iterator = iter(dataset.to_iter_dataset(options))

    def step_rows(self, step: int) -> np.ndarray:
        """The example indices this process reads for `step`: [rows.stop - rows.start] int32."""
        epoch, position = divmod(int(step), self.steps_per_epoch)
        first = position * self.batch_size
        return self.permutation(epoch)[first + self.rows.start : first + self.rows.stop]

    def read_step(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """(images [b, ...], labels [b]) of `step`, b = this process's rows of the batch."""
        return self.source.read(self.step_rows(step))

    def next_chunk(self, num_steps: int) -> tuple[np.ndarray, np.ndarray]:
        """The next `num_steps` steps' rows: (images [num_steps, b, ...], labels [num_steps, b])."""
        parts = [next(self._iterator) for _ in range(num_steps)]
        self.next_step += num_steps
        self.rows_served += num_steps * (self.rows.stop - self.rows.start)
        return np.stack([p[0] for p in parts]), np.stack([p[1] for p in parts])

    def close(self) -> None:
        close = getattr(self._iterator, 'close', None)
        if close is not None:
            close()


def train_chunk_rows(
    state: steps.TrainState,
    images: jax.Array,
    labels: jax.Array,
    loop_key: jax.Array,
    beta: jax.Array,
    *,
    num_steps: int,
    loop: str,
    static: steps.StepConfig,
    batch_sharding: Any = None,
    input_spec: Any = None,
) -> tuple[steps.TrainState, dict[str, jax.Array]]:
    """`num_steps` optimizer steps on pre-gathered stored rows (`steps.train_steps`).

    Args:
      images: [num_steps, B, *event], the rows `steps.train_chunk` would gather.
      labels: [num_steps, B] int32.
      (the rest as in `steps.train_chunk`)
    """
    return steps.train_steps(
        state,
        (images, labels),
        lambda batch: batch,
        loop_key,
        beta,
        num_steps=num_steps,
        loop=loop,
        static=static,
        batch_sharding=batch_sharding,
        input_spec=input_spec,
    )


class StreamedChunks:
    """The trainer's chunk call for the streamed pipeline: reads, assembles, runs the steps.

    Called like `Run.chunk_fn` (`perm`, `perm_epoch`, `train_images`, `train_labels` and
    `data_key` are passed through or unused: the reader follows the permutations on the host).
    A context manager: leaving it stops the reader's threads.
    """

    def __init__(self, run: Any, start_step: int):
        config = run.config
        batch_size = config.input.batch_size
        self.chunk_sharding = NamedSharding(run.mesh, P(None, 'data'))
        self.reader = StreamReader(
            run.train_source,
            run.data_key,
            batch_size=batch_size,
            rows=local_rows(run.batch_sharding, batch_size),
            start_step=start_step,
            stop_step=config.num_train_steps,
            prefetch_steps=_prefetch_steps(config, run.data_shape),
        )
        self._step = jax.jit(
            functools.partial(
                train_chunk_rows,
                loop=config.loop,
                static=run.static,
                batch_sharding=run.batch_sharding,
                input_spec=run.input_spec,
            ),
            static_argnames=('num_steps',),
            donate_argnums=(0,),
            compiler_options=backends.compiler_options(backends.model_family(config)),
        )
        self.batch_size = batch_size

    def __call__(
        self,
        state,
        perm,
        perm_epoch,
        train_images,
        train_labels,
        loop_key,
        data_key,
        beta,
        *,
        num_steps: int,
    ):
        images, labels = self.reader.next_chunk(num_steps)
        images = self._global(images)
        labels = self._global(labels)
        state, sums = self._step(state, images, labels, loop_key, beta, num_steps=num_steps)
        return state, perm, perm_epoch, sums

    def _global(self, local: np.ndarray) -> jax.Array:
        shape = (local.shape[0], self.batch_size, *local.shape[2:])
        return jax.make_array_from_process_local_data(self.chunk_sharding, local, shape)

    def __enter__(self) -> StreamedChunks:
        return self

    def __exit__(self, *exc) -> None:
        self.reader.close()


def _prefetch_steps(config: ml_collections.ConfigDict, data_shape: tuple[int, ...]) -> int:
    step_bytes = config.input.batch_size * math.prod(data_shape) * _DEVICE_ITEMSIZE
    return max(1, min(2 * config.steps_per_call, PREFETCH_BYTES // step_bytes))


def device_permutation_rows(run: Any, step: int, num_steps: int) -> np.ndarray:
    """The device path's example indices of steps step .. step + num_steps - 1 (for checks)."""
    num = len(run.train_source) if run.train_source is not None else len(run.train_data['image'])
    epoch = jnp.asarray(step // run.steps_per_epoch, jnp.int32)
    perm = batches.epoch_permutation(run.data_key, epoch, num)
    idx, _, _ = batches.chunk_indices(
        jnp.asarray(step), perm, epoch, run.data_key, num, num_steps, run.config.input.batch_size
    )
    return np.asarray(idx)
