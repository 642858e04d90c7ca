"""The built-in VAE's networks: an encoder and a decoder built from layer-spec strings.

`models.VAE` holds one of each (and re-exports them); `layers.py` parses the specs and lists the
tokens. Both take a flat batch [B, ...] and optional conditioning features (one-hot labels).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from vae_jax import distributions
from vae_jax import layers as layers_lib
from vae_jax.layers import LayerSpec

Array = jax.Array


def _flatten_batch(x: Array, event_ndim: int) -> tuple[Array, tuple[int, ...]]:
    """[*batch, *event] -> ([prod(batch), *event], batch); no batch axes gives B = 1."""
    batch_shape = x.shape[: x.ndim - event_ndim]
    return x.reshape((-1, *x.shape[x.ndim - event_ndim :])), batch_shape


def _apply_layers(
    layers: tuple[LayerSpec, ...],
    h: Array,
    cond: Array | None,
    *,
    train: bool,
    key: str,
    out_channels: int,
    out_units: int,
    bn_momentum: float,
    bn_axis_name: str | None,
    convt_implementation: str,
) -> tuple[Array, Array | None]:
    """Runs a parsed body, creating its submodules in the calling (compact) module.

    Args:
      layers: the parsed spec.
      h: [B, ...] features.
      cond: [B, L] one-hot labels to concatenate where the features are first flat, or None.
      train: BatchNorm mode.
      key: the config key of the spec, for error messages.
      out_channels, out_units: what `out` means in conv / dense tokens.
      bn_momentum, bn_axis_name: BatchNorm settings (see the module docstring).
      convt_implementation: `layers.ConvTranspose.implementation`.

    Returns:
      (h [B, ...], cond): cond is None once it has been concatenated.
    """

    def join(h):
        return (jnp.concatenate([h, cond], axis=-1), None) if cond is not None else (h, None)

    if h.ndim == 2:
        h, cond = join(h)
    for layer in layers:
        kind = layer.kind
        if kind in ('conv', 'convt', 'maxpool', 'upsample') and h.ndim != 4:
            raise ValueError(
                f'{key}: token {layer.token!r} needs per-example features [H, W, C], got '
                f'{h.shape[1:]}; put a reshape(h,w,c) before it'
            )
        if kind in ('dense', 'flatten'):
            h, cond = join(h.reshape((h.shape[0], -1)))
        if kind == 'dense':
            h = nn.Dense(out_units if layer.uses_out else layer.features)(h)
        elif kind == 'conv':
            features = out_channels if layer.uses_out else layer.features
            h = nn.Conv(features, layer.kernel_size, layer.strides, padding=layer.padding)(h)
        elif kind == 'convt':
            h = layers_lib.ConvTranspose(
                out_channels if layer.uses_out else layer.features,
                layer.kernel_size,
                layer.strides,
                layer.padding,
                layer.output_padding,
                implementation=convt_implementation,
            )(h)
        elif kind == 'maxpool':
            h = nn.max_pool(h, layer.kernel_size, layer.strides, padding=layer.padding)
        elif kind == 'upsample':
            h = layers_lib.upsample_nearest(h, layer.factor)
        elif kind == 'bn':
            h = nn.BatchNorm(
                use_running_average=not train,
                axis_name=bn_axis_name if train else None,
                momentum=bn_momentum,
            )(h)
        elif kind == 'reshape':
            if layers_lib.flat_size(h.shape[1:]) != layers_lib.flat_size(layer.shape):
                raise ValueError(
                    f'{key}: token {layer.token!r} cannot reshape per-example features of shape '
                    f'{h.shape[1:]} ({layers_lib.flat_size(h.shape[1:])} values)'
                )
            h = h.reshape((h.shape[0], *layer.shape))
        elif kind in layers_lib.ACTIVATIONS:
            h = layers_lib.ACTIVATIONS[kind](h)
    return h, cond


class Encoder(nn.Module):
    """Layer-spec body + Dense head: x [B, *data_shape] -> posterior parameters [B, P].

    Attributes:
      layers: the parsed `model.encoder` spec.
      num_outputs: P.
      bn_momentum: BatchNorm running-average momentum.
      bn_axis_name: BatchNorm's pooling axis name with train=True (see the module docstring).
      convt_implementation: see `layers.conv_transpose`.
    """

    layers: tuple[LayerSpec, ...]
    num_outputs: int
    bn_momentum: float = 0.99
    bn_axis_name: str | None = 'batch'
    convt_implementation: str = 'subpixel'

    @nn.compact
    def __call__(self, x: Array, cond: Array | None = None, *, train: bool) -> Array:
        """Args: x: [B, *data_shape]. cond: [B, L] or None. Returns: [B, P]."""
        h, cond = _apply_layers(
            self.layers,
            x,
            cond,
            train=train,
            key='model.encoder',
            out_channels=0,
            out_units=0,
            bn_momentum=self.bn_momentum,
            bn_axis_name=self.bn_axis_name,
            convt_implementation=self.convt_implementation,
        )
        h = h.reshape((h.shape[0], -1))
        if cond is not None:
            h = jnp.concatenate([h, cond], axis=-1)
        return nn.Dense(self.num_outputs, name='head')(h)


class Decoder(nn.Module):
    """Layer-spec body: z [B, D] -> likelihood parameters [B, *data_shape[:-1], C * m].

    Attributes:
      layers: the parsed `model.decoder` spec.
      data_shape: [*spatial, C] of one example.
      num_channels: m, likelihood values per data value.
      learned_sigma: the body outputs C channels (the Gaussian loc) and a scalar parameter
        'raw_sigma' fills the second half (`distributions.gaussian_scale` maps it to sigma).
      sigma: initial standard deviation for `learned_sigma`.
      bn_momentum, bn_axis_name: BatchNorm settings.
      convt_implementation: see `layers.conv_transpose`.
    """

    layers: tuple[LayerSpec, ...]
    data_shape: tuple[int, ...]
    num_channels: int = 1
    learned_sigma: bool = False
    sigma: float = 1.0
    bn_momentum: float = 0.99
    bn_axis_name: str | None = 'batch'
    convt_implementation: str = 'subpixel'

    @nn.compact
    def __call__(self, z: Array, cond: Array | None = None, *, train: bool) -> Array:
        """Args: z: [B, D]. cond: [B, L] or None. Returns: [B, *data_shape[:-1], C * m]."""
        body_channels = self.data_shape[-1] * (1 if self.learned_sigma else self.num_channels)
        expected = (*self.data_shape[:-1], body_channels)
        h, _ = _apply_layers(
            self.layers,
            z,
            cond,
            train=train,
            key='model.decoder',
            out_channels=body_channels,
            out_units=layers_lib.flat_size(expected),
            bn_momentum=self.bn_momentum,
            bn_axis_name=self.bn_axis_name,
            convt_implementation=self.convt_implementation,
        )
        if h.shape[1:] != expected:
            if h.ndim == 2 and h.shape[1] == layers_lib.flat_size(expected):
                h = h.reshape((h.shape[0], *expected))
            else:
                raise ValueError(
                    f'model.decoder: the body outputs per-example shape {h.shape[1:]}, but data '
                    f'shape {self.data_shape} needs {expected} (or '
                    f'{layers_lib.flat_size(expected)} flat values): end the spec with dense(out) '
                    'or conv(out,KxK) and check the reshape, strides and paddings'
                )
        if self.learned_sigma:
            init = nn.initializers.constant(distributions.inverse_gaussian_scale(self.sigma))
            raw = self.param('raw_sigma', init, ())
            h = jnp.concatenate([h, jnp.broadcast_to(raw, h.shape)], axis=-1)
        return h
