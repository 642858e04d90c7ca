"""A run's pictures: what the trainer writes at the end of a run and `vae_jax.evaluate` rewrites.

`write_pictures(out_dir, bind_fn, variables, key, images, labels, ...)` takes plain values (the
model's bind function, its variables, the data, a key), writes `<out_dir>/<name>.png` and returns
the RGB arrays (for TensorBoard):

- image data: `reconstructions` (inputs above, the likelihood's mean at the posterior mean below),
  `samples` (the likelihood's mean at z ~ N(0, I)) and `manifold` (decoded means over a grid of
  prior quantiles; the plane of the two leading principal directions of the posterior means when
  the latent has more than 2 dimensions; a conditional model is shown for label 0);
- 2-D toy data: `toy_density` (data and model samples overlaid; the model's log p(x) on a grid,
  importance-sampled, beside the true density where one is given);
- any data, given the posterior means: `latent_scatter` (coloured by label when the data set has
  labels; PCA to 2-D when the latent has more dimensions);
- given metrics.jsonl: `training_curves`.

A picture that cannot be drawn is a logged warning, never an error: pictures must not cost a
trained run its eval.json. The plotting itself (pure numpy -> PNG) is in `vae_jax/plots.py`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

from vae_jax import data, evaluation, plots, steps

# The model density of a 2-D toy set: a TOY_GRID x TOY_GRID grid, TOY_DENSITY_K importance
# samples per point (log p(x) of these models is within ~0.01 nats at k = 100).
TOY_GRID = 64
TOY_DENSITY_K = 100
NUM_RECONSTRUCTIONS = 16
NUM_SAMPLES = 64


def config_options(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The keyword arguments of `write_pictures` that a run's config decides."""
    name, noise = config.input.dataset, config.input.toy_noise
    toy = name in data.TOY_DATASETS
    return {
        'latent_dim': int(config.model.latent_dim),
        'num_classes': int(config.model.num_classes),
        'dynamic_binarize': config.input.binarize == 'dynamic',
        'has_labels': data.dataset_info(config.input)['has_labels'],
        'true_log_density': functools.partial(data.true_log_density, name, noise=noise)
        if toy
        else None,
    }


def write_pictures(
    out_dir: Path,
    bind_fn: Callable[..., Any],
    variables: Any,
    key: jax.Array,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    latent_dim: int,
    num_classes: int = 1,
    dynamic_binarize: bool = False,
    has_labels: bool = True,
    true_log_density: Callable[[np.ndarray], np.ndarray] | None = None,
    posterior_means: np.ndarray | None = None,
    metrics_path: Path | None = None,
) -> dict[str, np.ndarray]:
    """Writes a model's pictures into `out_dir`; returns them as RGB arrays [H, W, 3] uint8.

    Args:
      out_dir: directory for the PNG files (created).
      bind_fn: (variables, y [] int or None) -> (encode, decode), evaluation mode.
      variables: the model's variables {'params', optional 'batch_stats'}.
      key: the pictures' key (a run's eval key, so pictures are comparable across steps).
      images: [N, *event] examples (test split): inputs of the reconstructions, and the data of
        the toy density.
      labels: [N] int labels of those examples.
      latent_dim: D.
      num_classes: labels of the samples cycle through 0 .. num_classes - 1 (conditional model).
      dynamic_binarize: show Bernoulli draws of the inputs, as the run saw them.
      has_labels: colour the latent scatter by label.
      true_log_density: points [M, 2] -> [M] log density of a toy set's distribution, if known.
      posterior_means: [N, D] posterior means, for the latent scatter and the manifold's PCA
        plane; None skips both the scatter and (for D > 2) the manifold.
      metrics_path: the run's metrics.jsonl, for the training curves; None or empty skips them.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    image_key, toy_key = jax.random.fold_in(key, 1), jax.random.fold_in(key, 2)
    decode_mean = functools.partial(_decode_mean, bind_fn, variables)
    pictures = {}

    def draw(name: str, fn: Callable[[Path], Any]) -> None:
        try:
            out = fn(out_dir / f'{name}.png')
            pictures[name] = out[0] if isinstance(out, tuple) else out
        except Exception as e:  # noqa: BLE001 (a picture must not fail a run; say why)
            logging.warning('picture %s not drawn: %s: %s', name, type(e).__name__, e)
            print(f'WARNING: picture {out_dir / name}.png not drawn: {type(e).__name__}: {e}')

    if images.ndim == 4:
        n = min(NUM_RECONSTRUCTIONS, images.shape[0])
        x = images[:n]
        if dynamic_binarize:
            x = np.asarray(steps.binarize(image_key, jnp.asarray(x)))
        recon = functools.partial(jax.jit(steps.reconstruct, static_argnums=0), bind_fn)
        draw(
            'reconstructions',
            lambda p: plots.reconstructions(x, np.asarray(recon(variables, x, labels[:n])), p),
        )
        z = jax.random.normal(image_key, (NUM_SAMPLES, latent_dim))
        sample_labels = jnp.arange(NUM_SAMPLES, dtype=jnp.int32) % num_classes
        draw('samples', lambda p: plots.samples(decode_mean(z, sample_labels), p))
        if latent_dim <= 2 or posterior_means is not None:
            basis = plots.pca(posterior_means)[1] if latent_dim > 2 else None

            def decode_grid(z):
                return decode_mean(jnp.asarray(z), jnp.zeros((z.shape[0],), jnp.int32))

            draw('manifold', lambda p: plots.manifold(decode_grid, latent_dim, p, basis=basis))
    if posterior_means is not None:
        scatter_labels = labels if has_labels else None
        draw('latent_scatter', lambda p: plots.latent_scatter(posterior_means, scatter_labels, p))
    if images.ndim == 2 and images.shape[1] == 2:
        draw(
            'toy_density',
            lambda p: toy_density(
                bind_fn,
                variables,
                toy_key,
                images,
                p,
                latent_dim=latent_dim,
                true_log_density=true_log_density,
            ),
        )
    if metrics_path is not None and metrics_path.is_file() and metrics_path.stat().st_size:
        draw('training_curves', lambda p: plots.training_curves(metrics_path, p))
    return pictures


def _decode_mean(bind_fn: Callable, variables: Any, z: jax.Array, labels: jax.Array) -> np.ndarray:
    decode = jax.jit(steps.decode_mean, static_argnums=0)
    return np.asarray(decode(bind_fn, variables, z, labels))


def toy_density(
    bind_fn: Callable,
    variables: Any,
    key: jax.Array,
    points_data: np.ndarray,
    path: Path,
    *,
    latent_dim: int,
    true_log_density: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Data, model samples, the model's log p(x) on a grid (importance-sampled), true density.

    Args:
      bind_fn, variables: the model.
      key: the key of the importance samples and model samples.
      points_data: [N, 2] data points.
      path: the PNG to write.
      latent_dim: D.
      true_log_density: [M, 2] -> [M] log density of the data's distribution, or None; a set
        without one (it raises NotImplementedError or ValueError) is drawn without that panel.
    """
    lo, hi = np.percentile(points_data, [0.5, 99.5], axis=0)
    margin = 0.15 * (hi - lo)
    gx = np.linspace(lo[0] - margin[0], hi[0] + margin[0], TOY_GRID, dtype=np.float32)
    gy = np.linspace(lo[1] - margin[1], hi[1] + margin[1], TOY_GRID, dtype=np.float32)
    points = np.stack(np.meshgrid(gx, gy), axis=-1).reshape(-1, 2)  # [G*G, 2], 'xy' layout
    model = evaluation.evaluate_dataset(
        key,
        points,
        np.zeros(points.shape[0], np.int32),
        bind_fn,
        variables,
        k_list=(),
        nll_k=TOY_DENSITY_K,
        batch_size=512,
        return_per_example=True,
    )['per_example']['log_px'].reshape(TOY_GRID, TOY_GRID)
    num_samples = min(2000, points_data.shape[0])
    model_samples = np.asarray(sample(bind_fn, variables, key, num_samples, latent_dim))
    true = None
    if true_log_density is not None:
        try:
            true = true_log_density(points).reshape(TOY_GRID, TOY_GRID)
        except (ValueError, NotImplementedError) as e:  # No density for this set: no panel.
            logging.warning('toy density: no true density panel: %s', e)
    return plots.toy_density(points_data[:num_samples], model_samples, gx, gy, model, true, path)


def sample(bind_fn: Callable, variables: Any, key: jax.Array, n: int, latent_dim: int) -> jax.Array:
    """n draws x ~ p(x|z), z ~ N(0, I) (label 0 for a conditional model): [n, *data_shape]."""

    @jax.jit
    def draw(variables, key):
        z_key, x_key = jax.random.split(key)
        z = jax.random.normal(z_key, (n, latent_dim))
        _, decode = bind_fn(variables, jnp.zeros((), jnp.int32))
        return decode(z).sample(seed=x_key)

    return draw(variables, key)
