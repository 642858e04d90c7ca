"""A run's pictures: what the trainer writes at the end of a run and `vae_jax.evaluate` rewrites.

`write_pictures(out_dir, model, key, images, labels, ...)` takes a trained model
(`trained.TrainedModel`: any model, seen through the model protocol), the data and a key, writes
`<out_dir>/<name>.png` and returns the RGB arrays (for TensorBoard):

- image data, for a model with `decode_mean`: `reconstructions` (inputs above, the likelihood's
  mean at the posterior mean below); with a prior to draw from (`sample_prior`, or the one-layer
  capability's `prior_distribution`) also `samples` (the likelihood's mean at z ~ p(z)); for a
  model with one latent vector, `manifold` (decoded means over a grid of N(0, 1) quantiles; the
  plane of the two leading principal directions of the posterior means when the latent has more
  than 2 dimensions; a conditional model is shown for label 0); for a model with the one-layer
  capability and a diagonal Gaussian q, `latent_traversals` (`traversals.latent_traversals`:
  each latent dimension swept over [-2.5, 2.5] from the first input's posterior mean, rows
  ordered by their KL over the reconstructions' inputs, at most `NUM_TRAVERSAL_ROWS` rows);
- 2-D toy data: `toy_density` (data and model samples overlaid; the model's log p(x) on a grid,
  importance-sampled, beside the true density where one is given);
- any model, given the posterior means: `latent_scatter` (coloured by label when the data set
  has labels; PCA to 2-D when the latents have more dimensions; several latents are joined);
- given metrics.jsonl: `training_curves`.

A picture that needs a member the model lacks is skipped, and the log says which and why. A
picture that cannot be drawn is a logged warning, never an error: pictures must not cost a
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

from vae_jax import data, evaluation, input_transform, plots, steps, trained, traversals

# The model density of a 2-D toy set: a TOY_GRID x TOY_GRID grid, TOY_DENSITY_K importance
# samples per point (log p(x) of these models is within ~0.01 nats at k = 100).
TOY_GRID = 64
TOY_DENSITY_K = 100
NUM_RECONSTRUCTIONS = 16
NUM_SAMPLES = 64
NUM_TRAVERSAL_ROWS = 16


def config_options(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """The keyword arguments of `write_pictures` that a run's config decides."""
    name, noise = config.input.dataset, config.input.toy_noise
    toy = name in data.TOY_DATASETS
    return {
        'num_classes': int(config.model.num_classes),
        'dynamic_binarize': config.input.binarize == 'dynamic',
        'has_labels': data.dataset_info(config.input)['has_labels'],
        'true_log_density': functools.partial(data.true_log_density, name, noise=noise)
        if toy
        else None,
    }


def write_pictures(
    out_dir: Path,
    model: trained.TrainedModel,
    key: jax.Array,
    images: np.ndarray,
    labels: np.ndarray,
    *,
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
      model: the trained model (any model of the protocol).
      key: the pictures' key (a run's eval key, so pictures are comparable across steps).
      images: [M, *event] examples of the evaluated split, as model input: image data's first
        `NUM_RECONSTRUCTIONS` rows are the reconstructions' inputs (the rest are not used, and
        `picture_rows` passes only those), toy 2-D points all of the split (the density's data).
      labels: [N] int labels of the split's examples (the first M are those of `images`).
      num_classes: labels of the samples cycle through 0 .. num_classes - 1 (conditional model).
      dynamic_binarize: show Bernoulli draws of the inputs, as the run saw them.
      has_labels: colour the latent scatter by label.
      true_log_density: points [M, 2] -> [M] log density of a toy set's distribution, if known.
      posterior_means: [N, D] posterior means (several latents joined along D), for the latent
        scatter and the manifold's PCA plane; None skips both the scatter and (for D > 2) the
        manifold.
      metrics_path: the run's metrics.jsonl, for the training curves; None or empty skips them.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    image_key, toy_key = jax.random.fold_in(key, 1), jax.random.fold_in(key, 2)
    pictures = {}
    caps = model.capabilities
    can_sample = caps.distributions or caps.sample_prior
    shapes = model.parts.static.latent_shapes
    latent_dim = int(shapes[0][1][0]) if len(shapes) == 1 and len(shapes[0][1]) == 1 else None
    where = type(model.parts.model).__name__

    def draw(name: str, fn: Callable[[Path], Any]) -> None:
        try:
            out = fn(out_dir / f'{name}.png')
            pictures[name] = out[0] if isinstance(out, tuple) else out
        except Exception as e:  # noqa: BLE001 (a picture must not fail a run; say why)
            logging.warning('picture %s not drawn: %s: %s', name, type(e).__name__, e)
            print(f'WARNING: picture {out_dir / name}.png not drawn: {type(e).__name__}: {e}')

    def skip(name: str, why: str) -> None:
        logging.warning('picture %s skipped: %s', name, why)
        print(f'picture {out_dir / name}.png skipped: {why}')

    def y_of(y: np.ndarray) -> np.ndarray | None:
        return y if model.parts.static.use_labels else None

    if images.ndim == 4:
        if not caps.decode_mean:
            for name in ('reconstructions', 'samples', 'manifold'):
                skip(name, f'{where} has no decode_mean (an optional protocol member)')
        else:
            n = min(NUM_RECONSTRUCTIONS, images.shape[0])
            x = images[:n]
            if dynamic_binarize:
                x = np.asarray(steps.binarize(image_key, jnp.asarray(x)))
            draw(
                'reconstructions',
                lambda p: plots.reconstructions(x, model.reconstruct(x, y_of(labels[:n])), p),
            )
            sample_labels = np.arange(NUM_SAMPLES, dtype=np.int32) % num_classes
            if can_sample:
                draw(
                    'samples',
                    lambda p: plots.samples(
                        model.sample(image_key, NUM_SAMPLES, y_of(sample_labels)), p
                    ),
                )
            else:
                skip('samples', f'{where} has no sample_prior (an optional protocol member)')
            if latent_dim is None:
                skip('manifold', f'{where} has more than one latent vector')
            elif latent_dim > 2 and posterior_means is None:
                skip('manifold', 'no posterior means to find its plane')
            else:
                basis = plots.pca(posterior_means)[1] if latent_dim > 2 else None

                def decode_grid(z):
                    grid_labels = np.zeros((z.shape[0],), np.int32)
                    return model.decode_mean(np.asarray(z, np.float32), y_of(grid_labels))

                draw('manifold', lambda p: plots.manifold(decode_grid, latent_dim, p, basis=basis))
            if not caps.distributions:
                skip(
                    'latent_traversals',
                    f'{where} has no one-layer capability (posterior_distribution, '
                    'likelihood_distribution and prior_distribution of one latent vector)',
                )
            elif model.builtin and model.config.model.posterior != 'diagonal':
                skip(
                    'latent_traversals',
                    f'model.posterior={model.config.model.posterior!r}: the KL per dimension '
                    'needs a diagonal Gaussian posterior',
                )
            else:
                draw(
                    'latent_traversals',
                    lambda p: traversals.latent_traversals(
                        model,
                        x,
                        p,
                        max_rows=NUM_TRAVERSAL_ROWS,
                        labels=y_of(labels[:n]),
                    ),
                )
    if posterior_means is not None:
        scatter_labels = labels if has_labels else None
        draw('latent_scatter', lambda p: plots.latent_scatter(posterior_means, scatter_labels, p))
    if images.ndim == 2 and images.shape[1] == 2:
        if can_sample and caps.decode_mean:
            draw(
                'toy_density',
                lambda p: toy_density(model, toy_key, images, p, true_log_density=true_log_density),
            )
        else:
            skip('toy_density', f'{where} has no sample_prior and decode_mean to draw samples')
    if metrics_path is not None and metrics_path.is_file() and metrics_path.stat().st_size:
        draw('training_curves', lambda p: plots.training_curves(metrics_path, p))
    return pictures


def picture_rows(images: Any, input_spec: input_transform.InputSpec) -> np.ndarray:
    """The evaluated split's rows that `write_pictures` draws, as float32 model input.

    Images: the first `NUM_RECONSTRUCTIONS` rows only (all the pictures read), so a split read
    from files (`row_sources.StoredRows`) is not read whole; toy 2-D points: all (the density).

    Args:
      images: [N, H, W, C] or [N, 2] stored rows (an array or a `StoredRows` view).
      input_spec: how stored rows become model input (`input_transform.spec_from`).
    """
    if images.ndim == 4:
        images = images[:NUM_RECONSTRUCTIONS]
    return np.asarray(input_transform.to_model_input(np.asarray(images), input_spec))


def posterior_means(per_example: dict[str, np.ndarray]) -> np.ndarray | None:
    """[N, D] posterior means from an evaluation's per-example arrays (several latents joined)."""
    if 'posterior_mean' in per_example:
        return per_example['posterior_mean']
    layers = [v for k, v in sorted(per_example.items()) if k.startswith('posterior_mean/')]
    return np.concatenate(layers, axis=1) if layers else None


def toy_density(
    model: trained.TrainedModel,
    key: jax.Array,
    points_data: np.ndarray,
    path: Path,
    *,
    true_log_density: Callable[[np.ndarray], np.ndarray] | None = None,
) -> np.ndarray:
    """Data, model samples, the model's log p(x) on a grid (importance-sampled), true density.

    Args:
      model: the trained model.
      key: the key of the importance samples and model samples.
      points_data: [N, 2] data points.
      path: the PNG to write.
      true_log_density: [M, 2] -> [M] log density of the data's distribution, or None; a set
        without one (it raises NotImplementedError or ValueError) is drawn without that panel.
    """
    lo, hi = np.percentile(points_data, [0.5, 99.5], axis=0)
    margin = 0.15 * (hi - lo)
    gx = np.linspace(lo[0] - margin[0], hi[0] + margin[0], TOY_GRID, dtype=np.float32)
    gy = np.linspace(lo[1] - margin[1], hi[1] + margin[1], TOY_GRID, dtype=np.float32)
    points = np.stack(np.meshgrid(gx, gy), axis=-1).reshape(-1, 2)  # [G*G, 2], 'xy' layout
    log_px = evaluation.evaluate_dataset(
        key,
        points,
        np.zeros(points.shape[0], np.int32),
        variables=model.variables,
        model_fn=model.parts.model_fn,
        k_list=(),
        nll_k=TOY_DENSITY_K,
        batch_size=512,
        return_per_example=True,
    )['per_example']['log_px'].reshape(TOY_GRID, TOY_GRID)
    num_samples = min(2000, points_data.shape[0])
    model_samples = sample(model, key, num_samples)
    true = None
    if true_log_density is not None:
        try:
            true = true_log_density(points).reshape(TOY_GRID, TOY_GRID)
        except (ValueError, NotImplementedError) as e:  # No density for this set: no panel.
            logging.warning('toy density: no true density panel: %s', e)
    return plots.toy_density(points_data[:num_samples], model_samples, gx, gy, log_px, true, path)


def sample(model: trained.TrainedModel, key: jax.Array, n: int) -> np.ndarray:
    """n draws x ~ p(x|z), z ~ p(z) (label 0 for a conditional model): [n, *data_shape].

    With the one-layer capability x is drawn from p(x|z) (`likelihood_distribution`); otherwise
    the protocol offers only the likelihood's mean (`decode_mean`), which is what is shown.
    """
    z_key, x_key = jax.random.split(key)
    labels = np.zeros((n,), np.int32) if model.parts.static.use_labels else None
    if model.capabilities.distributions:
        z = model.sample_prior(z_key, n)
        return np.asarray(model.decode(z, labels).sample(seed=x_key))
    return model.sample(z_key, n, labels)
