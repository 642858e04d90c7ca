"""The NLL in bits per dimension, where that is a code length (`bits_per_dim`).

Re-exported by `vae_jax.evaluation`, whose NLL it converts.
"""

from __future__ import annotations

import math
from typing import Any

DISCRETE_LIKELIHOODS = ('bernoulli',)
CONTINUOUS_LIKELIHOODS = ('gaussian', 'continuous_bernoulli')


def bits_per_dim(
    nll: float | None,
    *,
    likelihood: str,
    num_levels: int | None,
    num_dims: int,
    num_padding_dims: int = 0,
) -> dict[str, Any]:
    """The NLL in bits per dimension, only where it is a code length for the data's values.

    Defined in two cases (D = num_dims, the real pixels; padding never counts):
    - a discrete likelihood on binary data: bpd = nll / (D ln 2), exactly -log2 p(x) / D. With
      zero padding the NLL also pays for the padding pixels, -log p(x, pad) >= -log p(x), so
      the value is an upper bound on the code length of the real pixels.
    - a continuous likelihood on 8-bit data x = n / 255: the 256 cells [i / 256, (i + 1) / 256)
      partition [0, 1], and the probability of the 8-bit image n is the density's mass on its
      cell, P(n) = integral of p over the cell ~= p(x) (1/256)^D (the density at a point of the
      cell times the cell's volume). So -log2 P(n) / D = (nll + D ln 256) / (D ln 2), i.e.
      nll / (D ln 2) + 8. This is the usual dequantised number, but the models here are
      trained and evaluated on the grid points themselves (no uniform dequantisation noise), so
      it is a point approximation of P(n), not a bound: a density that peaks sharply at the grid
      points makes it too good (a negative value proves it: then it is undefined). The note
      says so.
    Undefined (absent, with the reason in the note): no NLL; real-valued data (toy sets: their
    NLL is a density in nats, not a code length); a continuous likelihood on binary data or on
    grids other than 8 bits; a continuous likelihood on zero-padded inputs (the padding's
    density is not a probability and would enter the NLL unbounded); unknown likelihoods.

    Args:
      nll: the mean -log p(x) in nats over the N examples, or None.
      likelihood: the likelihood's name, e.g. config.model.likelihood.
      num_levels: values a pixel takes (2 binary, 256 8-bit), None for real-valued data.
      num_dims: D, values per example excluding padding.
      num_padding_dims: zeros added per example by padding (their cost is in the NLL).

    Returns:
      {'bits_per_dim': float, 'bits_per_dim_note': str} where defined, else
      {'bits_per_dim_note': str} saying why not.
    """
    ln2 = math.log(2.0)
    if num_levels is None:  # First: with or without an NLL, real-valued data have no bits/dim.
        return {
            'bits_per_dim_note': 'undefined: the data are real-valued, so the NLL is a density '
            '(nats), not a code length'
        }
    if nll is None:
        return {'bits_per_dim_note': 'undefined: no NLL was estimated (nll_k = 0)'}
    if likelihood in DISCRETE_LIKELIHOODS and num_levels == 2:
        if nll < 0:  # An estimate of log p(x) > 0, impossible for probabilities <= 1.
            return {
                'bits_per_dim_note': f'undefined: the NLL estimate {nll:.4f} is negative, which '
                'no discrete likelihood can give; the estimate is wrong'
            }
        note = f'-log2 p(x) / D with D = {num_dims} pixels'
        if num_padding_dims:
            note += (
                f'; the NLL includes the {num_padding_dims} zero-padding pixels, so this is an '
                'upper bound on the code length of the real pixels'
            )
        return {'bits_per_dim': nll / (num_dims * ln2), 'bits_per_dim_note': note}
    if likelihood in CONTINUOUS_LIKELIHOODS and num_levels == 256 and not num_padding_dims:
        # P(8-bit image n) = mass of the density on n's cell ~= p(n / 255) * (1/256)^D, so
        # -log2 P = (nll + D ln 256) / ln 2 bits, divided by D.
        value = (nll + num_dims * math.log(256.0)) / (num_dims * ln2)
        if value < 0:  # P(n) > 1: the density spikes on the grid points.
            return {
                'bits_per_dim_note': f'undefined: (nll + D ln 256) / (D ln 2) = {value:.4f} < 0 '
                'for this model: its density at the 8-bit values exceeds 256^D, so the density '
                'times the cell volume is no approximation of the probability of the 8-bit image'
            }
        return {
            'bits_per_dim': value,
            'bits_per_dim_note': f'(nll + D ln 256) / (D ln 2) with D = {num_dims}: the density '
            'at the 8-bit value times the volume (1/256)^D of its cell; an approximation of the '
            'probability of the 8-bit image (no dequantisation noise in training), not a bound',
        }
    if likelihood in CONTINUOUS_LIKELIHOODS and num_levels == 256:
        reason = (
            f'a continuous likelihood on zero-padded inputs ({num_padding_dims} padding values '
            'whose density is not a probability)'
        )
    elif likelihood in CONTINUOUS_LIKELIHOODS:
        reason = (
            f'a continuous likelihood ({likelihood}) on data with {num_levels} levels (defined '
            'here for 8-bit data only)'
        )
    elif likelihood in DISCRETE_LIKELIHOODS:
        reason = f'a discrete likelihood ({likelihood}) on data with {num_levels} levels'
    else:
        reason = f'likelihood {likelihood!r} is not known to be discrete or continuous'
    return {'bits_per_dim_note': f'undefined: {reason}'}
