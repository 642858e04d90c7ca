"""Building blocks of `models.py`: the layer-spec parser and a fast 2-D transposed convolution.

Layer specs are strings of tokens joined by '-' (config keys `model.encoder`, `model.decoder`):

    dense(N)                        Dense layer of width N (flattens a non-flat input first)
    conv(C,KxK[,sS][,same|valid])   2-D convolution, C channels, stride S (default 1, 'same')
    convt(C,KxK[,sS][,same|valid][,opP])
                                    2-D transposed convolution (flax `ConvTranspose` semantics)
                                    with P extra output rows/columns at the bottom/right, P < S
    maxpool(N[,sS][,same|valid])    max pooling, window NxN, stride S (default N, 'valid')
    upsample(N)                     nearest-neighbour upsampling by N
    bn                              BatchNorm (running statistics in the 'batch_stats' collection)
    flatten                         flatten the per-example features
    reshape(d1,...,dn)              reshape the per-example features
    relu tanh selu gelu elu sigmoid softplus
                                    activations
    [tokens]xN                      a group of tokens repeated N times

`KxK` may also be written `K`; `opP` may be `opPxQ`. In the decoder's last token the width or
channel count may be `out`: the likelihood's output size (see `models.py`).

Example: '[conv(32,3x3)-bn-selu]x2-maxpool(2)-flatten'.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import re
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Array = jax.Array

ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    'relu': nn.relu,
    'tanh': jnp.tanh,
    'selu': nn.selu,
    'gelu': nn.gelu,
    'elu': nn.elu,
    'sigmoid': nn.sigmoid,
    'softplus': nn.softplus,
}
ALLOWED_TOKENS = (
    'dense(N|out), conv(C|out,KxK[,sS][,same|valid]), '
    'convt(C|out,KxK[,sS][,same|valid][,opP]), maxpool(N[,sS][,same|valid]), upsample(N), bn, '
    f'flatten, reshape(d1,...,dn), {", ".join(ACTIVATIONS)}, and groups [tokens]xN'
)
_TOKEN = re.compile(r'^([a-z]+)(?:\((.*)\))?$')
_GROUP = re.compile(r'\[([^\[\]]*)\]x(\d+)')
_DN = ('NHWC', 'HWIO', 'NHWC')


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """One parsed token of a layer spec.

    Attributes:
      kind: 'dense', 'conv', 'convt', 'maxpool', 'upsample', 'bn', 'flatten', 'reshape' or an
        activation name (a key of `ACTIVATIONS`).
      token: the token as written, for error messages.
      features: dense width or conv channels; None when `uses_out`.
      uses_out: the width/channels are the literal `out` (the decoder's output size).
      kernel_size: (kh, kw) for conv/convt, the window for maxpool.
      strides: (sh, sw).
      padding: 'SAME' or 'VALID'.
      output_padding: (ph, pw) for convt.
      shape: per-example target shape for reshape.
      factor: upsampling factor.
    """

    kind: str
    token: str
    features: int | None = None
    uses_out: bool = False
    kernel_size: tuple[int, int] = (1, 1)
    strides: tuple[int, int] = (1, 1)
    padding: str = 'SAME'
    output_padding: tuple[int, int] = (0, 0)
    shape: tuple[int, ...] = ()
    factor: int = 1


class _TokenError(Exception):
    """A malformed token; `parse_spec` turns it into a ValueError naming the config key."""


def _int(text: str, what: str, minimum: int = 1) -> int:
    if not re.fullmatch(r'\d+', text) or int(text) < minimum:
        raise _TokenError(f'{what} must be an integer >= {minimum}, got {text!r}')
    return int(text)


def _pair(text: str, what: str, minimum: int = 1) -> tuple[int, int]:
    parts = text.split('x')
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise _TokenError(f'{what} must look like 3x3 or 3, got {text!r}')
    a, b = (_int(p, what, minimum) for p in parts)
    return a, b


def _features(text: str) -> tuple[int | None, bool]:
    if text == 'out':
        return None, True
    return _int(text, 'the width/channel count'), False


def _parse_options(kind: str, options: Sequence[str], **defaults) -> dict:
    """Parses the optional `sS`, `same|valid` and (convt) `opP` arguments."""
    result = dict(defaults)
    for option in options:
        if option in ('same', 'valid'):
            result['padding'] = option.upper()
        elif option.startswith('op') and kind == 'convt':
            result['output_padding'] = _pair(option[2:], 'the output padding', minimum=0)
        elif option.startswith('s'):
            result['strides'] = _pair(option[1:], 'the stride')
        else:
            raise _TokenError(f'unknown option {option!r}')
    return result


def _parse_token(token: str) -> LayerSpec:
    match = _TOKEN.match(token)
    if not match:
        raise _TokenError('unknown token')
    kind, arg_text = match.group(1), match.group(2)
    args = [a.strip() for a in arg_text.split(',')] if arg_text is not None else []
    if kind in ACTIVATIONS or kind in ('bn', 'flatten'):
        if args:
            raise _TokenError(f'{kind!r} takes no arguments')
        return LayerSpec(kind, token)
    if kind == 'dense':
        if len(args) != 1:
            raise _TokenError('expected dense(N) or dense(out)')
        features, uses_out = _features(args[0])
        return LayerSpec(kind, token, features=features, uses_out=uses_out)
    if kind in ('conv', 'convt'):
        if len(args) < 2:
            raise _TokenError(f'expected {kind}(C,KxK[,sS][,same|valid]...)')
        features, uses_out = _features(args[0])
        kernel_size = _pair(args[1], 'the kernel size')
        options = _parse_options(kind, args[2:])
        spec = LayerSpec(
            kind, token, features=features, uses_out=uses_out, kernel_size=kernel_size, **options
        )
        if any(p >= s for p, s in zip(spec.output_padding, spec.strides, strict=True)):
            raise _TokenError(
                f'output padding {spec.output_padding} must be smaller than the stride '
                f'{spec.strides}'
            )
        return spec
    if kind == 'maxpool':
        if not args:
            raise _TokenError('expected maxpool(N[,sS][,same|valid])')
        window = _pair(args[0], 'the pooling window')
        options = _parse_options(kind, args[1:], strides=window, padding='VALID')
        return LayerSpec(kind, token, kernel_size=window, **options)
    if kind == 'upsample':
        if len(args) != 1:
            raise _TokenError('expected upsample(N)')
        return LayerSpec(kind, token, factor=_int(args[0], 'the upsampling factor'))
    if kind == 'reshape':
        if not args:
            raise _TokenError('expected reshape(d1,...,dn)')
        return LayerSpec(kind, token, shape=tuple(_int(a, 'a reshape size') for a in args))
    raise _TokenError('unknown token')


def _expand_groups(spec: str) -> str:
    previous = None
    while previous != spec:
        previous = spec
        spec = _GROUP.sub(lambda m: '-'.join([m.group(1)] * int(m.group(2))), spec)
    return spec


@functools.lru_cache(maxsize=256)
def parse_spec(spec: str, key: str, *, allow_out: bool = False) -> tuple[LayerSpec, ...]:
    """Parses a layer-spec string (see the module docstring) into `LayerSpec`s.

    Args:
      spec: tokens joined by '-', e.g. 'conv(32,3x3,s2)-relu-flatten'. '' is an empty body.
      key: the config key the spec came from ('model.encoder' / 'model.decoder'), for messages.
      allow_out: whether the LAST token may use `out` as its width/channel count.

    Returns:
      The layers in order, with `[...]xN` groups expanded.

    Raises:
      ValueError: naming `key`, the offending token and the allowed tokens.
    """
    expanded = _expand_groups(spec.replace(' ', ''))
    if '[' in expanded or ']' in expanded:
        raise ValueError(
            f'{key}={spec!r}: malformed group; write a repeated group as [tokens]xN, e.g. '
            f'[conv(32,3x3)-relu]x2. Allowed tokens: {ALLOWED_TOKENS}'
        )
    if not expanded:
        return ()
    tokens = expanded.split('-')
    layers = []
    for i, token in enumerate(tokens):
        try:
            layer = _parse_token(token)
        except _TokenError as e:
            raise ValueError(
                f'{key}={spec!r}: bad token {token!r} ({e}). Allowed tokens: {ALLOWED_TOKENS}'
            ) from None
        if layer.uses_out and not (allow_out and i == len(tokens) - 1):
            where = "the decoder's last token" if allow_out else 'the decoder (last token)'
            raise ValueError(
                f'{key}={spec!r}: bad token {token!r}: `out` is only allowed in {where}'
            )
        layers.append(layer)
    return tuple(layers)


def upsample_nearest(x: Array, factor: int) -> Array:
    """Nearest-neighbour upsampling.

    Args:
      x: [N, H, W, C].
      factor: integer scale.

    Returns:
      [N, H * factor, W * factor, C].
    """
    return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


# ---------------------------------------------------------------------------------------------
# Transposed convolution.


def conv_transpose_padding(
    kernel_size: Sequence[int],
    strides: Sequence[int],
    padding: str,
    output_padding: Sequence[int] = (0, 0),
) -> tuple[tuple[int, int], ...]:
    """The explicit (low, high) padding `lax.conv_transpose` uses for 'SAME'/'VALID'.

    Output padding is added to the high side, so the output gains `output_padding` rows/columns
    at the bottom/right.

    Args:
      kernel_size: (kh, kw).
      strides: (sh, sw).
      padding: 'SAME' or 'VALID'.
      output_padding: (ph, pw) >= 0.

    Returns:
      ((low_h, high_h), (low_w, high_w)) for `lax.conv_general_dilated` with lhs_dilation=strides.
    """
    pads = []
    for k, s, extra in zip(kernel_size, strides, output_padding, strict=True):
        if padding == 'SAME':
            total = k + s - 2
            low = k - 1 if s > k - 1 else math.ceil(total / 2)
        elif padding == 'VALID':
            total = k + s - 2 + max(k - s, 0)
            low = k - 1
        else:
            raise ValueError(f"padding must be 'SAME' or 'VALID', got {padding!r}")
        pads.append((low, total - low + extra))
    return tuple(pads)


def _dilated_conv(x: Array, kernel: Array, strides, pads) -> Array:
    return lax.conv_general_dilated(
        x, kernel, (1, 1), pads, lhs_dilation=strides, dimension_numbers=_DN
    )


def _phases(size: int, k: int, s: int, low: int, high: int) -> tuple[int, list]:
    """Sub-pixel decomposition of one spatial axis of a transposed convolution.

    The transposed convolution y[o] = sum_t xp[o + t] w[t], with xp = pad(dilate(x, s),
    (low, high)), splits by output phase r = o mod s into a stride-1 correlation of x with the
    sub-kernel w[k0::s]: y[s*q + r] = sum_j x[q + d + j] w[k0 + s*j], where k0 = (low - r) mod s
    and d = (r + k0 - low) / s.

    Returns:
      (output size, [(num_outputs q, k0, sub-kernel size, pad_low, pad_high) for each phase r]).
    """
    out = low + s * (size - 1) + 1 + high - k + 1
    phases = []
    for r in range(s):
        q = -(-(out - r) // s)
        k0 = (low - r) % s
        taps = -(-(k - k0) // s) if k > k0 else 0
        pad_low = -((r + k0 - low) // s)
        phases.append((q, k0, taps, pad_low, q + taps - 1 - size - pad_low))
    return out, phases


def _subpixel_conv_transpose(x: Array, kernel: Array, strides, pads) -> Array:
    """Transposed convolution as s_h * s_w stride-1 convolutions whose outputs are interleaved.

    Built from plain (no lhs dilation) convolutions only, so autodiff's input and weight
    gradients are plain convolutions too, also under `jax.vmap`.
    """
    n, h, w, _ = x.shape
    kh, kw, _, features = kernel.shape
    out_h, phases_h = _phases(h, kh, strides[0], *pads[0])
    out_w, phases_w = _phases(w, kw, strides[1], *pads[1])
    q_h, q_w = phases_h[0][0], phases_w[0][0]  # phase 0 has the most outputs
    blocks = []
    for (qh, k0h, th, lh, hh), (qw, k0w, tw, lw, hw) in itertools.product(phases_h, phases_w):
        if th == 0 or tw == 0:  # kernel smaller than the stride: this phase gets no taps
            y = jnp.zeros((n, qh, qw, features), x.dtype)
        else:
            sub = kernel[k0h :: strides[0], k0w :: strides[1]]
            y = lax.conv_general_dilated(
                x, sub, (1, 1), ((lh, hh), (lw, hw)), dimension_numbers=_DN
            )
        blocks.append(jnp.pad(y, ((0, 0), (0, q_h - qh), (0, q_w - qw), (0, 0))))
    # blocks are ordered (r_h, r_w); interleave to y[s_h*q + r_h, s_w*p + r_w].
    y = jnp.stack(blocks, axis=0).reshape((strides[0], strides[1], n, q_h, q_w, features))
    y = y.transpose((2, 3, 0, 4, 1, 5)).reshape((n, q_h * strides[0], q_w * strides[1], features))
    return y[:, :out_h, :out_w]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _custom_vjp_conv_transpose(x: Array, kernel: Array, strides, pads) -> Array:
    return _dilated_conv(x, kernel, strides, pads)


def _custom_vjp_fwd(x, kernel, strides, pads):
    return _dilated_conv(x, kernel, strides, pads), (x, kernel)


def _custom_vjp_bwd(strides, pads, residuals, g):
    # y = conv(pad(dilate(x, s)), w) is the input-transpose of a strided convolution, so both
    # cotangents are plain convolutions of g padded by (k - 1 - low, k - 1 - high):
    # dx = strided conv of g with the flipped kernel; dw = g correlated with x dilated by s.
    x, kernel = residuals
    g_pads = tuple(
        (k - 1 - lo, k - 1 - hi) for k, (lo, hi) in zip(kernel.shape[:2], pads, strict=True)
    )
    dx = lax.conv_general_dilated(
        g, jnp.flip(kernel, (0, 1)), strides, g_pads, dimension_numbers=('NHWC', 'HWOI', 'NHWC')
    )
    dw = lax.conv_general_dilated(
        g, x, (1, 1), g_pads, rhs_dilation=strides, dimension_numbers=('CHWN', 'IHWO', 'HWCN')
    )
    return dx, jnp.flip(dw, (0, 1))


_custom_vjp_conv_transpose.defvjp(_custom_vjp_fwd, _custom_vjp_bwd)

CONV_TRANSPOSE_IMPLEMENTATIONS = ('subpixel', 'custom_vjp', 'lax')


def conv_transpose(
    x: Array,
    kernel: Array,
    strides: Sequence[int],
    padding: str,
    output_padding: Sequence[int] = (0, 0),
    implementation: str = 'subpixel',
) -> Array:
    """2-D transposed convolution, equal to flax's `nn.ConvTranspose` (`transpose_kernel=False`).

    With zero output padding this is `lax.conv_transpose(x, kernel, strides, padding,
    dimension_numbers=('NHWC', 'HWIO', 'NHWC'))`. That primitive is a convolution with lhs
    dilation, and XLA:CPU computes its weight gradient (a convolution with lhs dilation whose
    "kernel" is the whole output cotangent) 5-20x slower than a plain convolution. The
    implementations here compute the same values and gradients from plain convolutions:

    - 'subpixel' (default): s_h * s_w stride-1 convolutions with the strided sub-kernels
      w[r_h::s_h, r_w::s_w], interleaved. Autodiff's gradients are plain convolutions, also under
      `jax.vmap` (per-example training), and forward-mode/higher-order autodiff work.
    - 'custom_vjp': the lax forward with a `jax.custom_vjp` whose backward pass is two plain
      convolutions. Under `jax.vmap` the backward pass runs per vmapped example, so the weight
      gradient becomes a grouped convolution (feature_group_count = batch size), slower there.
    - 'lax': `lax.conv_transpose` itself (the reference).

    Args:
      x: [N, H, W, C_in].
      kernel: [kh, kw, C_in, C_out] (flax's layout).
      strides: (sh, sw).
      padding: 'SAME' (output H * sh) or 'VALID' (output H * sh + max(kh - sh, 0)).
      output_padding: (ph, pw), extra output rows/columns at the bottom/right.
      implementation: one of `CONV_TRANSPOSE_IMPLEMENTATIONS`.

    Returns:
      [N, H_out + ph, W_out + pw, C_out].
    """
    strides = tuple(strides)
    pads = conv_transpose_padding(kernel.shape[:2], strides, padding.upper(), output_padding)
    if implementation == 'subpixel':
        return _subpixel_conv_transpose(x, kernel, strides, pads)
    if implementation == 'custom_vjp':
        return _custom_vjp_conv_transpose(x, kernel, strides, pads)
    if implementation == 'lax':
        return _dilated_conv(x, kernel, strides, pads)
    raise ValueError(
        f'implementation={implementation!r}; allowed: {" | ".join(CONV_TRANSPOSE_IMPLEMENTATIONS)}'
    )


class ConvTranspose(nn.Module):
    """Drop-in for `flax.linen.ConvTranspose` (2-D, 'SAME'/'VALID') with fast gradients.

    Same parameters ('kernel' [kh, kw, C_in, C_out], 'bias' [C_out]), initialisers and outputs as
    `nn.ConvTranspose(features, kernel_size, strides, padding)`; see `conv_transpose` for why and
    how the computation differs. `output_padding` adds rows/columns at the bottom/right (equal to
    flax with explicit padding ((low, high + ph), (low, high + pw))).

    Attributes:
      features: output channels C_out.
      kernel_size: (kh, kw).
      strides: (sh, sw).
      padding: 'SAME' or 'VALID'.
      output_padding: (ph, pw), each smaller than its stride.
      use_bias: whether to add a bias.
      implementation: see `conv_transpose`.
    """

    features: int
    kernel_size: tuple[int, int]
    strides: tuple[int, int] = (1, 1)
    padding: str = 'SAME'
    output_padding: tuple[int, int] = (0, 0)
    use_bias: bool = True
    kernel_init: Callable[..., Array] = nn.initializers.lecun_normal()
    bias_init: Callable[..., Array] = nn.initializers.zeros_init()
    implementation: str = 'subpixel'

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """Applies the transposed convolution.

        Args:
          x: [..., H, W, C_in] with any number (including zero) of leading batch axes.

        Returns:
          [..., H_out, W_out, C_out].
        """
        batch_shape, event = x.shape[:-3], x.shape[-3:]
        kernel = self.param(
            'kernel', self.kernel_init, (*self.kernel_size, event[-1], self.features), jnp.float32
        )
        y = conv_transpose(
            x.reshape((-1, *event)),
            kernel,
            self.strides,
            self.padding,
            self.output_padding,
            self.implementation,
        )
        if self.use_bias:
            bias = self.param('bias', self.bias_init, (self.features,), jnp.float32)
            y = y + bias.reshape((1, 1, 1, -1))
        return y.reshape((*batch_shape, *y.shape[1:]))


def flat_size(shape: Sequence[int]) -> int:
    """Number of elements of a shape (1 for ())."""
    return int(np.prod(shape, dtype=np.int64))
