"""Stored rows -> model input: images stay as stored (8-bit) until the jitted step converts them.

`data.get_datasets` keeps images as they are stored, on the host and on the device: uint8
0..max_value (mnist, fashion_mnist and any TFDS image set 0..255, digits 0..16, an `.npz` of
uint8) or bool (binarized_mnist, dsprites, an `.npz` of bool, and the result of
`input.binarize='static'`), one byte per value, a quarter of float32's memory; float32 only for
the toy 2-D sets and an `.npz` that is already float in [0, 1]. Inside the jitted step, after a
batch's rows are gathered, `to_model_input` turns them into the model's input, float32
[B, *data_shape]: scaled by 1 / max_value, then zero-padded to 32x32 when `input.pad_to_32`.
Dynamic binarisation is not done here: the step draws it from its own key after this.

The values are the ones the host computed for the whole split before images stayed 8-bit,
`x.astype(float32) / float32(max_value)` in numpy, then zero padding, so the model sees the
same float32 values bit for bit (`tests/input_transform_test.py` checks every stored value).
The division is not done in the jitted code: XLA rewrites `x / c` (c a constant, or any scalar
broadcast) as `x * (1 / c)`, which is one ulp off for some values (e.g. some k / 255). numpy
divides the 256 possible values once, and the step looks each pixel up in that table. bool
rows are looked up too, in the table [0.0, 1.0]: the same values as `x.astype(float32)`, but
XLA:CPU fuses a bool -> float32 convert into every consumer of the input, and the IWAE paper's
MLP step on binary MNIST (benchmark W1) was 9-11% slower with it than with float32 rows, while
the lookup runs as fast as float32 rows (measured side by side in one process).

`InputSpec` says how: a frozen, hashable dataclass, so a jitted function takes it as a static
argument. `spec_from(config.input, images)` builds it from the config and the stored array.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import data

STORED_DTYPES = ('uint8', 'bool', 'float32')


@dataclasses.dataclass(frozen=True)
class InputSpec:
    """How a batch of stored rows becomes the model's input (hashable: a static jit argument).

    Attributes:
      stored_dtype: 'uint8' (0..max_value), 'bool' (0/1), or 'float32' (already the model's
        values: [0, 1] images, or unscaled toy 2-D points).
      max_value: the stored value of a white pixel (uint8 only: 255, or 16 for digits); 1 for
        bool and float32.
      pad_to_32: zero-pad [H, W] images to 32x32, centred (`input.pad_to_32`).
    """

    stored_dtype: str = 'float32'
    max_value: int = 1
    pad_to_32: bool = False

    def __post_init__(self):
        if self.stored_dtype not in STORED_DTYPES:
            raise ValueError(
                f'InputSpec.stored_dtype={self.stored_dtype!r} is not supported; allowed: '
                f'{", ".join(STORED_DTYPES)}.'
            )
        if self.stored_dtype == 'uint8':
            ok = isinstance(self.max_value, int | np.integer) and 1 <= self.max_value <= 255
            allowed = 'an int in 1..255'
        else:
            ok = self.max_value == 1
            allowed = f'1 for {self.stored_dtype}'
        if not ok or isinstance(self.max_value, bool):
            raise ValueError(
                f'InputSpec.max_value={self.max_value!r} is invalid; allowed: {allowed}.'
            )

    def model_shape(self, stored_shape: tuple[int, ...]) -> tuple[int, ...]:
        """One example's shape as the model sees it: (32, 32, C) with `pad_to_32`, else as stored.

        Args:
          stored_shape: one stored example's shape, (H, W, C) or (2,).
        """
        stored_shape = tuple(int(d) for d in stored_shape)
        return (32, 32, stored_shape[-1]) if self.pad_to_32 else stored_shape


def spec_from(input_config, images) -> InputSpec:
    """The `InputSpec` of a data set's stored images.

    Args:
      input_config: the `config.input` ConfigDict (`dataset`, `pad_to_32`).
      images: the stored images (`data.get_datasets`' 'image' array, or anything with the same
        `dtype`, e.g. a batch a streamed reader returns).

    Returns:
      The spec: stored dtype from `images`, max_value from the data set
      (`data.stored_max_value`) for uint8, pad_to_32 from the config.

    Raises:
      ValueError: a stored dtype other than uint8, bool or float32.
    """
    dtype = np.dtype(images.dtype)
    if dtype.name not in STORED_DTYPES:
        raise ValueError(
            f'input.dataset={input_config.dataset!r}: stored images have dtype {dtype}; allowed: '
            f'{", ".join(STORED_DTYPES)} (data.get_datasets keeps images uint8 or bool; float32 '
            'only for toy 2-D points and float .npz files).'
        )
    max_value = data.stored_max_value(input_config) if dtype.name == 'uint8' else 1
    return InputSpec(dtype.name, max_value, bool(input_config.pad_to_32))


def to_model_input(images_stored: jax.Array | np.ndarray, spec: InputSpec) -> jax.Array:
    """A batch of stored rows -> the model's input, float32 [B, *data_shape].

    The one conversion of stored data: the on-device train chunk and evaluation call it on the
    rows they gather, and a streamed input pipeline calls it on the batches it reads, so this
    signature stays as it is. Pure and jit-compatible; `spec` is static.

    Args:
      images_stored: [B, H, W, C] images (or [B, 2] toy points) of dtype `spec.stored_dtype`.
      spec: from `spec_from`.

    Returns:
      float32 [B, *spec.model_shape(images_stored.shape[1:])]: uint8 as numpy's
      `x.astype(float32) / float32(max_value)` (bit for bit), bool as 0.0 / 1.0, float32
      unchanged; then zero-padded to 32x32, centred, with `spec.pad_to_32`.

    Raises:
      ValueError: `images_stored` is not of the spec's stored dtype, or padding images over
        32x32 (at trace time).
    """
    dtype = np.dtype(images_stored.dtype)
    if dtype.name != spec.stored_dtype:
        raise ValueError(
            f'to_model_input: the stored rows have dtype {dtype}, but the input spec says '
            f'{spec.stored_dtype!r}; build the spec from the same data (input_transform.spec_from) '
            'and pass the rows as stored (allowed dtypes: ' + ', '.join(STORED_DTYPES) + ').'
        )
    x = jnp.asarray(images_stored)
    if spec.stored_dtype == 'uint8':
        x = jnp.asarray(scale_table(spec.max_value))[x]  # exact, unlike x / c (module docstring)
    elif spec.stored_dtype == 'bool':
        x = jnp.asarray(_BOOL_TABLE)[x.astype(jnp.int32)]  # = x.astype(float32), faster (above)
    if spec.pad_to_32:
        x = pad_to_32(x)
    return x


# float32 of False and True, the table bool rows are looked up in (module docstring).
_BOOL_TABLE = np.array([0.0, 1.0], np.float32)


def scale_table(max_value: int) -> np.ndarray:
    """float32 [256]: entry v is numpy's `float32(v) / float32(max_value)`, for every uint8 v."""
    return np.arange(256, dtype=np.float32) / np.float32(max_value)


def pad_to_32(x: jax.Array) -> jax.Array:
    """Zero-pads images to 32x32, centred (an odd margin puts the extra pixel bottom/right).

    The jnp twin of `data.pad_to_32` (same margins).

    Args:
      x: [B, H, W, C] with H, W <= 32.

    Returns:
      [B, 32, 32, C], same dtype.

    Raises:
      ValueError: not [B, H, W, C], or H or W over 32.
    """
    if x.ndim != 4:
        raise ValueError(f'pad_to_32: images must be [B, H, W, C], got shape {tuple(x.shape)}.')
    _, height, width, _ = x.shape
    if height > 32 or width > 32:
        raise ValueError(f'pad_to_32: images are {height}x{width}, larger than 32x32.')
    top, left = (32 - height) // 2, (32 - width) // 2
    return jnp.pad(x, ((0, 0), (top, 32 - height - top), (left, 32 - width - left), (0, 0)))
