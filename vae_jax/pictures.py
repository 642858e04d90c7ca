"""A run's pictures: what the trainer writes at the end of a run and `vae_jax.evaluate` rewrites.

`write_pictures(run, state, out_dir, ...)` writes `<out_dir>/<name>.png` and returns the RGB
arrays (for TensorBoard):

- image data: `reconstructions` (inputs above, the likelihood's mean at the posterior mean below),
  `samples` (the likelihood's mean at z ~ N(0, I)) and `manifold` (decoded means over a grid of
  prior quantiles; the plane of the two leading principal directions of the posterior means when
  the latent has more than 2 dimensions; a conditional model is shown for label 0);
- 2-D toy data: `toy_density` (data and model samples overlaid; the model's log p(x) on a grid,
  importance-sampled, beside the true density where one exists);
- any data, given the test set's posterior means: `latent_scatter` (coloured by label when the
  data set has labels; PCA to 2-D when the latent has more dimensions);
- given metrics.jsonl: `training_curves`.

The plotting itself (pure numpy -> PNG) is in `vae_jax/plots.py`; this module computes what to
plot from a run's model.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import data, evaluation, plots, steps

if TYPE_CHECKING:
    from vae_jax.trainer import Run

# The model density of a 2-D toy set: a TOY_GRID x TOY_GRID grid, TOY_DENSITY_K importance
# samples per point (log p(x) of these models is within ~0.01 nats at k = 100).
TOY_GRID = 64
TOY_DENSITY_K = 100
NUM_RECONSTRUCTIONS = 16
NUM_SAMPLES = 64


def write_pictures(
    run: Run,
    state: steps.TrainState,
    out_dir: Path,
    *,
    posterior_means: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    metrics_path: Path | None = None,
) -> dict[str, np.ndarray]:
    """Writes the run's pictures into `out_dir`; returns them as RGB arrays [H, W, 3] uint8.

    Args:
      run: the run (data, model, keys).
      state: its train state.
      out_dir: directory for the PNG files (created).
      posterior_means: [N, D] posterior means of N examples, for the latent scatter and the
        manifold's PCA plane; None skips both the scatter and (for D > 2) the manifold.
      labels: [N] int labels of those examples (ignored for a data set without labels).
      metrics_path: the run's metrics.jsonl, for the training curves; None or empty skips them.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    variables = run.variables(state)
    images, eval_labels = run.eval_split()
    latent_dim = run.config.model.latent_dim
    key = jax.random.fold_in(run.eval_key, 1)
    pictures = {}
    if len(run.data_shape) == 3:
        n = min(NUM_RECONSTRUCTIONS, images.shape[0])
        x = images[:n]
        if run.static.dynamic_binarize:
            x = np.asarray(steps.binarize(key, jnp.asarray(x)))
        recon = jax.jit(steps.reconstruct, static_argnums=0)(
            run.bind_fn, variables, x, eval_labels[:n]
        )
        pictures['reconstructions'] = plots.reconstructions(
            x, np.asarray(recon), out_dir / 'reconstructions.png'
        )
        z = jax.random.normal(key, (NUM_SAMPLES, latent_dim))
        sample_labels = jnp.arange(NUM_SAMPLES, dtype=jnp.int32) % run.config.model.num_classes
        samples = _decode_mean(run, variables, z, sample_labels)
        pictures['samples'] = plots.samples(samples, out_dir / 'samples.png')
        if latent_dim <= 2 or posterior_means is not None:
            basis = plots.pca(posterior_means)[1] if latent_dim > 2 else None

            def decode_grid(z):
                zeros = jnp.zeros((z.shape[0],), jnp.int32)
                return _decode_mean(run, variables, jnp.asarray(z), zeros)

            pictures['manifold'], _ = plots.manifold(
                decode_grid, latent_dim, out_dir / 'manifold.png', basis=basis
            )
    if posterior_means is not None:
        has_labels = data.dataset_info(run.config.input)['has_labels']
        scatter_labels = labels if has_labels else None
        pictures['latent_scatter'] = plots.latent_scatter(
            posterior_means, scatter_labels, out_dir / 'latent_scatter.png'
        )
    if run.data_shape == (2,):
        pictures['toy_density'] = toy_density(run, variables, out_dir / 'toy_density.png')
    if metrics_path is not None and metrics_path.is_file() and metrics_path.stat().st_size:
        pictures['training_curves'] = plots.training_curves(
            metrics_path, out_dir / 'training_curves.png'
        )
    return pictures


def _decode_mean(run: Run, variables: Any, z: jax.Array, labels: jax.Array) -> np.ndarray:
    decode = jax.jit(steps.decode_mean, static_argnums=0)
    return np.asarray(decode(run.bind_fn, variables, z, labels))


def toy_density(run: Run, variables: Any, path: Path) -> np.ndarray:
    """Data, model samples, the model's log p(x) on a grid (importance-sampled), true density."""
    test = run.test_data['image']
    lo, hi = np.percentile(test, [0.5, 99.5], axis=0)
    margin = 0.15 * (hi - lo)
    gx = np.linspace(lo[0] - margin[0], hi[0] + margin[0], TOY_GRID, dtype=np.float32)
    gy = np.linspace(lo[1] - margin[1], hi[1] + margin[1], TOY_GRID, dtype=np.float32)
    points = np.stack(np.meshgrid(gx, gy), axis=-1).reshape(-1, 2)  # [G*G, 2], 'xy' layout
    key = jax.random.fold_in(run.eval_key, 2)
    model = evaluation.evaluate_dataset(
        key,
        points,
        np.zeros(points.shape[0], np.int32),
        run.bind_fn,
        variables,
        k_list=(),
        nll_k=TOY_DENSITY_K,
        batch_size=512,
        return_per_example=True,
    )['per_example']['log_px'].reshape(TOY_GRID, TOY_GRID)
    num_samples = min(2000, test.shape[0])
    model_samples = np.asarray(sample(run, variables, key, num_samples))
    try:
        true = data.true_log_density(
            run.config.input.dataset, points, run.config.input.toy_noise
        ).reshape(TOY_GRID, TOY_GRID)
    except ValueError:  # No density: eight_gaussians or two_moons with toy_noise = 0.
        true = None
    return plots.toy_density(test[:num_samples], model_samples, gx, gy, model, true, path)


def sample(run: Run, variables: Any, key: jax.Array, n: int) -> jax.Array:
    """n draws x ~ p(x|z), z ~ N(0, I) (label 0 for a conditional model): [n, *data_shape]."""

    @jax.jit
    def draw(variables, key):
        z_key, x_key = jax.random.split(key)
        z = jax.random.normal(z_key, (n, run.config.model.latent_dim))
        _, decode = run.bind_fn(variables, jnp.zeros((), jnp.int32))
        return decode(z).sample(seed=x_key)

    return draw(variables, key)
