"""Latent traversals: each latent dimension swept while the others stay at an image's code.

`traversal_codes` builds the codes (pure numpy), `kl_per_dimension` the ordering for a diagonal
Gaussian posterior, and `latent_traversals` decodes and draws a loaded run's picture (also one of
a run's pictures, `pictures.write_pictures`, for every model that can draw it):

    model = vae_jax.load('runs/dsprites_beta4')
    traversals.latent_traversals(model, test_images[:1], 'runs/dsprites_beta4/images/trav.png')

Row i sweeps dimension order[i] over `num_steps` equally spaced values in [-limit, limit]
(standard-normal units of the prior; default 2.5), the other dimensions fixed at the image's
posterior mean. Rows are ordered by the dimension's KL(q(z_d | x) || N(0, 1)) averaged over the
given images, largest first, and labelled with it: informative dimensions come first and
collapsed ones (KL near 0, whose rows do not change) last.

References: Higgins et al. (2017), beta-VAE (latent traversal figures).
"""

from __future__ import annotations

from pathlib import Path

import distrax
import numpy as np

from vae_jax import plots


def traversal_codes(
    z_mean: np.ndarray, order: np.ndarray, *, num_steps: int = 9, limit: float = 2.5
) -> np.ndarray:
    """The codes of a traversal picture.

    Args:
      z_mean: [D] the code held fixed.
      order: [R] int dimensions, one per row (R <= D).
      num_steps: values per row.
      limit: the row sweeps [-limit, limit].

    Returns:
      float32 [R, num_steps, D]: row r, column c equals z_mean except dimension order[r], which
      is -limit + 2 limit c / (num_steps - 1).
    """
    z_mean = np.asarray(z_mean, np.float32)
    values = np.linspace(-limit, limit, num_steps, dtype=np.float32)
    codes = np.tile(z_mean, (len(order), num_steps, 1))
    codes[np.arange(len(order)), :, np.asarray(order)] = values[None, :]
    return codes


def kl_per_dimension(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """KL(N(mean, std^2) || N(0, 1)) per dimension averaged over examples: [B, D] -> [D] nats."""
    mean, std = np.asarray(mean, np.float64), np.asarray(std, np.float64)
    return np.mean(0.5 * (mean**2 + std**2 - 1) - np.log(std), axis=0)


def draw(
    images: np.ndarray,
    path: str | Path,
    *,
    dims: np.ndarray,
    kl: np.ndarray | None,
    limit: float,
    title: str = 'Latent traversals',
    scale: int | None = None,
) -> np.ndarray:
    """Writes a traversal picture of decoded images and returns its RGB pixels.

    Args:
      images: [R, S, H, W, C] in [0, 1]: row r sweeps latent dims[r] over S values.
      path: the PNG file.
      dims: [R] the dimension of each row (row labels `z3`, with `KL 1.23` when kl is given).
      kl: [R] nats per row, or None.
      limit: the sweep's end (the horizontal axis label).
      title, scale: as `plots` grids.

    Returns:
      uint8 [H', W', 3], the pixels written (layout as `plots` grids).
    """
    rows, steps = images.shape[:2]
    tiles = plots.to_rgb(images.reshape(rows * steps, *images.shape[2:]))
    grid = plots.tile(tiles, rows, steps)
    h = images.shape[2]
    labels = []
    for r, d in enumerate(dims):
        text = f'z{int(d)}' if kl is None else f'z{int(d)}  KL {float(kl[r]):.2f}'
        labels.append((plots.PAD + r * (h + plots.PAD) + h / 2, text))
    return plots.finish_grid(
        grid,
        path,
        scale,
        tile_shape=images.shape[2:4],
        title=title,
        row_labels=labels,
        x_label=f'z_d from {-limit:g} to {limit:g} ({steps} steps); others at the posterior mean',
    )


def latent_traversals(
    model,
    images: np.ndarray,
    path: str | Path,
    *,
    num_steps: int = 9,
    limit: float = 2.5,
    max_rows: int | None = None,
    scale: int | None = None,
    labels: np.ndarray | None = None,
) -> np.ndarray:
    """The traversal picture of a loaded model with a diagonal Gaussian q (module docstring).

    Args:
      model: a `vae_jax.load(workdir)` result with the one-layer capability and a diagonal
        Gaussian posterior (the built-in VAE with `model.posterior='diagonal'`, or a module of
        one's own whose `posterior_distribution` is a `distrax.MultivariateNormalDiag`).
      images: [B, *data_shape]; the first is traversed, all B average the KL ordering.
      path: the PNG file.
      num_steps, limit: the sweep (`traversal_codes`).
      max_rows: draw only the first rows of the ordering (None: all D).
      scale: integer enlargement (None: `plots`' default).
      labels: [B] int labels of a conditional run (the first image's label decodes every tile);
        None otherwise.

    Returns:
      uint8 [H', W', 3], the pixels written.

    Raises:
      ValueError: a model without the one-layer capability or a diagonal Gaussian posterior.
    """
    if not model.capabilities.distributions:
        raise ValueError(
            f'latent_traversals: {type(model.parts.model).__name__} has no one-layer capability '
            '(posterior_distribution, likelihood_distribution and prior_distribution of one '
            'latent vector), which the KL per dimension and the decoding need.'
        )
    if model.builtin and model.config.model.posterior != 'diagonal':
        raise ValueError(
            'latent_traversals: the KL per dimension needs a diagonal Gaussian posterior (the '
            "built-in VAE with model.posterior='diagonal'); this run has "
            f'model.posterior={model.config.model.posterior!r}.'
        )
    q = model.encode(images, labels)
    if not isinstance(q, distrax.MultivariateNormalDiag):
        raise ValueError(
            'latent_traversals: the KL per dimension needs a diagonal Gaussian posterior '
            f'(distrax.MultivariateNormalDiag); this model has {type(q).__name__}.'
        )
    mean, std = np.asarray(q.mean()), np.asarray(q.stddev())
    kl = kl_per_dimension(mean, std)
    order = np.argsort(-kl, kind='stable')[:max_rows]
    codes = traversal_codes(mean[0], order, num_steps=num_steps, limit=limit)
    tile_labels = None if labels is None else np.full(codes.shape[0] * codes.shape[1], labels[0])
    decoded = np.asarray(model.decode(codes.reshape(-1, codes.shape[-1]), tile_labels).mean())
    decoded = decoded.reshape(*codes.shape[:2], *decoded.shape[1:])
    return draw(decoded, path, dims=order, kl=kl[order], limit=limit, scale=scale)
