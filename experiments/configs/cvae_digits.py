"""Generates chosen digits with a trained conditional VAE (configs/mnist_cvae.py).

    python experiments/configs/cvae_digits.py --workdir runs/configs/mnist_cvae

Writes `<workdir>/images/digits.png`: row c holds decode(z_j, y=c) for the same latents z_j in
every row (column j), so each row should show digit c and each column one handwriting style.
Also checks, without a trained classifier, that the rows are the digits asked for: each generated
image is assigned to the class whose mean test image it correlates with best (a nearest-template
classifier), and the script prints that classifier's agreement with the requested labels next to
its accuracy on real test images (the ceiling such a crude classifier reaches).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from vae_jax import evaluate, input_transform, plots, steps, trainer


def _template_predict(images: np.ndarray, templates: np.ndarray) -> np.ndarray:
    """Nearest template by correlation: images [N, P], templates [C, P] -> [N] int class."""
    a = images - images.mean(axis=1, keepdims=True)
    b = templates - templates.mean(axis=1, keepdims=True)
    a /= np.linalg.norm(a, axis=1, keepdims=True) + 1e-8
    b /= np.linalg.norm(b, axis=1, keepdims=True) + 1e-8
    return np.argmax(a @ b.T, axis=1)


def main() -> None:
    # argparse, not absl flags: vae_jax.evaluate already defines --workdir as an absl flag.
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--workdir', required=True, help='A configs/mnist_cvae.py run directory.')
    parser.add_argument('--num_styles', type=int, default=12, help='Columns: z ~ N(0, I).')
    parser.add_argument('--num_check', type=int, default=100, help='Samples per digit checked.')
    parser.add_argument('--seed', type=int, default=0, help='Seed for the latents.')
    args = parser.parse_args()
    workdir = Path(args.workdir)
    config = evaluate.load_config(workdir)
    if not config.model.use_labels:
        raise ValueError(f'{workdir} is not a conditional run (model.use_labels is False)')
    run = trainer.Run(config)
    state, step = evaluate.restore(run, workdir)
    variables = run.variables(state)
    num_classes = config.model.num_classes
    decode = jax.jit(steps.decode_mean, static_argnums=0)
    key = jax.random.key(args.seed)
    grid_key, check_key = jax.random.split(key)

    n = args.num_styles
    z = jax.random.normal(grid_key, (n, config.model.latent_dim))
    z_grid = jnp.tile(z, (num_classes, 1))  # row c, column j -> z_j
    y_grid = jnp.repeat(jnp.arange(num_classes, dtype=jnp.int32), n)
    grid = np.asarray(decode(run.bind_fn, variables, z_grid, y_grid))
    out = workdir / 'images' / 'digits.png'
    out.parent.mkdir(parents=True, exist_ok=True)
    plots.samples(grid, out, ncols=n)

    m = args.num_check
    z_check = jax.random.normal(check_key, (num_classes * m, config.model.latent_dim))
    y_check = jnp.repeat(jnp.arange(num_classes, dtype=jnp.int32), m)
    generated = np.asarray(decode(run.bind_fn, variables, z_check, y_check))
    test_images = np.asarray(
        input_transform.to_model_input(run.test_data['image'], run.input_spec)
    ).reshape(len(run.test_data['image']), -1)
    test_labels = run.test_data['label']
    templates = np.stack([test_images[test_labels == c].mean(axis=0) for c in range(num_classes)])
    predicted = _template_predict(generated.reshape(len(generated), -1), templates)
    per_class = (predicted == np.asarray(y_check)).reshape(num_classes, m).mean(axis=1)
    real = float((_template_predict(test_images, templates) == test_labels).mean())
    row_means = grid.reshape(num_classes, n, -1).mean(axis=(1, 2))
    row_spread = grid.reshape(num_classes, n, -1).std(axis=1).mean(axis=1)
    result = {
        'step': step,
        'picture': str(out),
        'template_agreement_generated': float(per_class.mean()),
        'template_agreement_per_digit': [round(float(a), 3) for a in per_class],
        'template_accuracy_real_test': real,
        'row_mean_intensity': [round(float(v), 4) for v in row_means],
        'row_style_spread': [round(float(v), 4) for v in row_spread],
    }
    print(json.dumps(result, indent=2))
    (workdir / 'cvae_digits.json').write_text(json.dumps(result, indent=2))


if __name__ == '__main__':
    main()
