"""The on-device training split sharded along examples: each device holds ceil(N / D) rows.

With one device, `input.pipeline='device'` puts the whole train split on it and each chunk of
steps gathers its rows there (`steps.train_chunk`). With D > 1 devices the split is held in D
blocks along the mesh's 'data' axis instead of on every device: N is padded with zero rows to
D * ceil(N / D) (padding is never read: the epoch permutation is over the true N), and each
process builds only its own devices' blocks (`put_split`), reading just those rows from the
data set's files where it has them (`streaming.FileSource`, with several processes). A device
holds ceil(N / D) rows instead of N, and a process reads its own devices' share of the files.

A chunk's rows are gathered by an explicit `shard_map` (`gather_rows`), not by XLA's SPMD
partitioner, which may all-gather the whole split onto every device: each device looks up the
indices that fall in its own block (the others give zeros), and a reduce-scatter over 'data'
(`psum_scatter` on the batch axis) sums the D contributions and leaves each device its part of
every step's batch, [num_steps, B / D, ...], the layout the streamed pipeline hands the step
(`streaming.train_chunk_rows`). Every row has exactly one non-zero contributor, and the sum runs
on the raw bits (bool as uint8, floats bitcast to unsigned integers of their width), so the
gathered rows are bit for bit `split[idx]`, -0.0 and NaN payloads included, and training equals
the replicated split's up to the float rounding of data parallelism itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from vae_jax import batches, input_transform, steps, streaming

Array = jax.Array
# (start, stop) -> (images [stop - start, ...], labels [stop - start] int32): stored rows.
RowReader = Callable[[int, int], tuple[np.ndarray, np.ndarray]]


def rows_per_device(num_examples: int, num_devices: int) -> int:
    """The rows one device holds of a split of `num_examples` sharded over `num_devices`."""
    return math.ceil(num_examples / num_devices)


def put_split(read_rows: RowReader, num_examples: int, mesh: Mesh) -> tuple[Array, Array]:
    """The train split on `mesh`, sharded along examples, each process reading its rows only.

    Args:
      read_rows: (start, stop) -> the stored rows start .. stop - 1 (images, labels int32), as
        `data.get_datasets` holds them.
      num_examples: N, the split's true size.
      mesh: the mesh whose 'data' axis shards the split (D devices).

    Returns:
      (images [D * ceil(N / D), ...], labels [D * ceil(N / D)] int32), sharded P('data'); rows
      N and beyond are zeros.
    """
    sharding = NamedSharding(mesh, P('data'))
    padded = rows_per_device(num_examples, mesh.size) * mesh.size
    rows = batches.process_rows(
        sharding,
        padded,
        f'the sharded train split of {padded} rows',
        "input.pipeline='device' on several devices",
    )
    stop = min(rows.stop, num_examples)
    if stop > rows.start:
        images, labels = read_rows(rows.start, stop)
    else:  # This process's devices hold padding only; one row gives the shape and dtype.
        images, labels = (a[:0] for a in read_rows(0, 1))
    pad = rows.stop - rows.start - len(images)
    if pad:
        images = np.concatenate([images, np.zeros((pad, *images.shape[1:]), images.dtype)])
        labels = np.concatenate([labels, np.zeros((pad,), labels.dtype)])
    return tuple(
        jax.make_array_from_process_local_data(sharding, local, (padded, *local.shape[1:]))
        for local in (images, labels)
    )


def _bits_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype whose sum of one value and zeros is exact: floats as unsigned of their width."""
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return np.dtype(np.uint8)
    if np.issubdtype(dtype, np.floating):
        return np.dtype(f'uint{8 * dtype.itemsize}')
    return dtype


def _to_bits(x: Array) -> Array:
    bits = _bits_dtype(x.dtype)
    if x.dtype == jnp.bool_:
        return x.astype(bits)
    return jax.lax.bitcast_convert_type(x, bits) if bits != x.dtype else x


def _from_bits(x: Array, dtype: np.dtype) -> Array:
    if dtype == np.bool_:
        return x.astype(jnp.bool_)
    return jax.lax.bitcast_convert_type(x, dtype) if x.dtype != dtype else x


def gather_rows(arrays: tuple[Array, ...], idx: Array, mesh: Mesh) -> tuple[Array, ...]:
    """`a[idx]` for arrays sharded along rows over the mesh's 'data' axis, without all-gathering.

    Each device gathers the indices inside its own block of rows (zeros for the others), and a
    reduce-scatter over 'data' on the batch axis sums the blocks' contributions, exactly (one
    non-zero contributor a row; the sum runs on the raw bits).

    Args:
      arrays: each [D * R, ...] sharded P('data') (R rows a device), any dtype.
      idx: [S, B] int32 row indices (replicated), B divisible by D; duplicates allowed.
      mesh: the mesh with the 'data' axis of D devices.

    Returns:
      One [S, B, ...] array per input, `a[idx]`, sharded P(None, 'data'): each device holds
      its B / D examples of every one of the S batches.
    """
    num_rows = arrays[0].shape[0]
    if num_rows % mesh.size or any(a.shape[0] != num_rows for a in arrays):
        raise ValueError(
            f'gather_rows: the arrays have {[a.shape[0] for a in arrays]} rows; allowed: the '
            f'same number, a multiple of the {mesh.size} devices'
        )
    block = num_rows // mesh.size

    def local(idx, *blocks):
        position = idx - jax.lax.axis_index('data') * block  # [S, B] rows of this block
        inside = (position >= 0) & (position < block)
        position = jnp.where(inside, position, 0)
        out = []
        for rows in blocks:
            bits = _to_bits(rows[position])  # [S, B, ...]
            mask = inside.reshape(inside.shape + (1,) * (bits.ndim - 2))
            bits = jnp.where(mask, bits, jnp.zeros((), bits.dtype))
            summed = jax.lax.psum_scatter(bits, 'data', scatter_dimension=1, tiled=True)
            out.append(_from_bits(summed, rows.dtype))
        return tuple(out)

    return jax.shard_map(
        local,
        mesh=mesh,
        in_specs=(P(),) + (P('data'),) * len(arrays),
        out_specs=(P(None, 'data'),) * len(arrays),
    )(idx, *arrays)


def train_chunk(
    state: steps.TrainState,
    perm: Array,
    perm_epoch: Array,
    train_images: Array,
    train_labels: Array,
    loop_key: Array,
    data_key: Array,
    beta: Array,
    *,
    num_examples: int,
    num_steps: int,
    batch_size: int,
    loop: str,
    static: steps.StepConfig,
    mesh: Mesh,
    batch_sharding: Any = None,
    input_spec: input_transform.InputSpec | None = None,
) -> tuple[steps.TrainState, Array, Array, dict[str, Array]]:
    """`steps.train_chunk` over a split sharded by `put_split`: same steps, same batches.

    The gathered rows go through the streamed pipeline's loop (`streaming.train_chunk_rows`),
    which receives them in the same layout.

    Args:
      train_images: [D * ceil(N / D), ...] stored rows, sharded P('data') (`put_split`).
      train_labels: [D * ceil(N / D)] int32, sharded alike.
      num_examples: static; N, the split's true size (the permutations are over it).
      mesh: the mesh with the 'data' axis.
      (the rest as in `steps.train_chunk`)

    Returns:
      (state, perm, perm_epoch, metric sums over the steps: dict of [] arrays).
    """
    idx, perm, perm_epoch = batches.chunk_indices(
        state.step, perm, perm_epoch, data_key, num_examples, num_steps, batch_size
    )
    images, labels = gather_rows((train_images, train_labels), idx, mesh)
    state, sums = streaming.train_chunk_rows(
        state,
        images,
        labels,
        loop_key,
        beta,
        num_steps=num_steps,
        loop=loop,
        static=static,
        batch_sharding=batch_sharding,
        input_spec=input_spec,
    )
    return state, perm, perm_epoch, sums
