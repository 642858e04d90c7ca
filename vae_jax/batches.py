"""Which examples each training step reads: epoch permutations and the rows of a chunk of steps.

The data order of epoch e is `permutation(fold_in(data_key, e), N)`, so a resumed run reads the
same batches as an uninterrupted one; `chunk_indices` gathers the rows of all the steps of one
jitted call before its loop. Re-exported by `steps`. `process_rows`: which rows of a sharded
array this process's devices hold, with several processes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

Array = jax.Array


def chunk_indices(
    step: Array,
    perm: Array,
    perm_epoch: Array,
    data_key: Array,
    num_examples: int,
    num_steps: int,
    batch_size: int,
) -> tuple[Array, Array, Array]:
    """The example indices of steps step .. step + num_steps - 1, and the last one's permutation.

    Step t uses rows (t mod S) B .. (t mod S) B + B - 1 of `epoch_permutation(data_key, t // S)`,
    S = num_examples // batch_size (a last partial batch is dropped). The chunk spans at most
    num_steps // S + 2 epochs. When that is at most 3, each epoch's permutation is drawn only if
    the chunk reaches it, and `perm` (the permutation of `perm_epoch`) is reused when it is that
    epoch, so a chunk inside one epoch draws nothing; otherwise (many short epochs) all are drawn
    in one batched call.

    Args:
      step: [] int, the first step.
      perm: [N] int32, the permutation of epoch `perm_epoch`.
      perm_epoch: [] int32.
      data_key: the run's data key.
      num_examples, num_steps, batch_size: static.

    Returns:
      (idx [num_steps, batch_size] int32, the last step's epoch permutation [N], that epoch []).
    """
    steps_per_epoch = num_examples // batch_size
    first = (step // steps_per_epoch).astype(perm_epoch.dtype)
    last = ((step + num_steps - 1) // steps_per_epoch).astype(perm_epoch.dtype)
    t = step + jnp.arange(num_steps)
    epoch_of_step = (t // steps_per_epoch).astype(perm_epoch.dtype)  # [num_steps]
    positions = (t % steps_per_epoch)[:, None] * batch_size + jnp.arange(batch_size)[None, :]
    num_epochs = num_steps // steps_per_epoch + 2  # an upper bound on the epochs spanned
    if num_epochs > 3:
        # Many short epochs (a small data set): draw them all at once, one batched sort.
        epochs = first + jnp.arange(num_epochs, dtype=first.dtype)
        perms = jax.vmap(epoch_permutation, in_axes=(None, 0, None))(data_key, epochs, num_examples)
        idx = perms[(epoch_of_step - first)[:, None], positions]
        return idx, perms[last - first], last
    idx = jnp.zeros((num_steps, batch_size), jnp.int32)
    last_perm = perm
    for i in range(num_epochs):
        epoch = first + i
        this = jax.lax.cond(
            epoch == perm_epoch,
            lambda e: perm,
            lambda e: jax.lax.cond(
                e <= last,
                lambda e: epoch_permutation(data_key, e, num_examples),
                lambda e: perm,
                e,
            ),
            epoch,
        )
        idx = jnp.where((epoch_of_step == epoch)[:, None], this[positions], idx)
        last_perm = jnp.where(epoch == last, this, last_perm)
    return idx, last_perm, last


def epoch_permutation(data_key: Array, epoch: Array | int, num_examples: int) -> Array:
    """The data order of `epoch`: [N] int32, a permutation drawn from fold_in(data_key, epoch)."""
    key = jax.random.fold_in(data_key, epoch)
    return jax.random.permutation(key, num_examples).astype(jnp.int32)


def process_rows(
    sharding: jax.sharding.Sharding, num_rows: int, what: str, needed_by: str
) -> slice:
    """The rows of a [num_rows, ...] array under `sharding` that this process's devices hold.

    Args:
      sharding: the array's sharding (along its first axis).
      num_rows: the array's length.
      what: the array, for the message (e.g. 'each batch of 64').
      needed_by: what needs one contiguous block, for the message (e.g. "input.pipeline='stream'").

    Returns:
      One contiguous slice of row indices.

    Raises:
      ValueError: they are not one contiguous block (a mesh whose devices are not grouped by
        process).
    """
    index_map = sharding.addressable_devices_indices_map((num_rows,))
    spans = sorted({s[0].indices(num_rows)[:2] for s in index_map.values()})
    start, stop = spans[0][0], spans[-1][1]
    if sum(b - a for a, b in spans) != stop - start:
        raise ValueError(
            f'this process holds rows {spans} of {what}, not one contiguous block; {needed_by} '
            "needs the mesh's devices grouped by process"
        )
    return slice(start, stop)
