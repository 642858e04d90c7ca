"""Pictures of a run: reconstructions, samples, latent scatter, 2-D manifold, toy density, curves.

numpy in, PNG out. Each function writes its PNG and returns the RGB image it wrote, uint8
[H, W, 3] (the PNG holds exactly these pixels), so the trainer can also log it to TensorBoard.

Image grids (reconstructions, samples, manifold) are drawn pixel for pixel, not resampled by a
matplotlib axes: tiles of [h, w] pixels separated by `PAD` grey pixels, the whole grid enlarged
by an integer `scale` (nearest neighbour; by default the smallest scale >= 1 that makes each
tile at least `MIN_TILE_PIXELS` on its long side and the grid at least `MIN_GRID_PIXELS`, so
28x28 and 32x32 digits are legible). A grid of r x c tiles is [(r (h + PAD) + PAD) * scale,
(c (w + PAD) + PAD) * scale] pixels; it is placed on a white canvas with a title strip of
`TITLE_PIXELS` above it, a strip of `LABEL_PIXELS` on its left for row or axis labels (where
the picture has them) and a strip of `AXIS_LABEL_PIXELS` below it for an axis label (manifold).

Charts use matplotlib's object API with the Agg canvas (no pyplot, no global backend state), so
they are safe in a headless trainer (`vae_jax.canvas`). Their size is `figsize * DPI` pixels.
Where colour means a value there is a colour bar, and panels that are compared share one colour
scale. The training curves are `vae_jax.curves` (re-exported here).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from matplotlib import colors
from matplotlib.figure import Figure
from scipy import stats

from vae_jax import canvas, curves

DPI = canvas.DPI
PAD = 1  # pixels between tiles
PAD_VALUE = 0.5  # grey, distinct from black and white pixels
MIN_GRID_PIXELS = 256
MIN_TILE_PIXELS = 56  # a 28x28 digit is drawn at least 2x, an 8x8 one 7x
TITLE_PIXELS = 30  # strip above a grid for its title
LABEL_PIXELS = 110  # strip left of a grid for row labels or the vertical axis label
AXIS_LABEL_PIXELS = 28  # strip below a grid for the horizontal axis label
FONT_SIZE = 10  # points; 14 pixels at DPI 100
CHART_INCHES = 5.0  # one scatter / density panel is CHART_INCHES x CHART_INCHES
MANIFOLD_QUANTILES = (0.05, 0.95)
DENSITY_SCALE_PERCENTILE = 99.5  # of the model's density, for the top of the colour scale


# ---------------------------------------------------------------------------------------------
# Pixel grids.


def to_rgb(images: np.ndarray) -> np.ndarray:
    """[N, H, W, C] in [0, 1] (C = 1 or 3) -> [N, H, W, 3] float, clipped."""
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f'images must be [N, H, W, C] with C = 1 or 3, got shape {images.shape}')
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    return np.clip(images, 0.0, 1.0)


def tile(images: np.ndarray, nrows: int, ncols: int) -> np.ndarray:
    """[N <= nrows * ncols, H, W, 3] -> [nrows (H + PAD) + PAD, ncols (W + PAD) + PAD, 3] float."""
    _, h, w, _ = images.shape
    grid = np.full((nrows * (h + PAD) + PAD, ncols * (w + PAD) + PAD, 3), PAD_VALUE, np.float32)
    for i, image in enumerate(images):
        r, c = divmod(i, ncols)
        top, left = PAD + r * (h + PAD), PAD + c * (w + PAD)
        grid[top : top + h, left : left + w] = image
    return grid


def _default_scale(grid_shape: tuple[int, ...], tile_shape: tuple[int, ...]) -> int:
    by_tile = math.ceil(MIN_TILE_PIXELS / max(tile_shape[:2]))
    by_grid = math.ceil(MIN_GRID_PIXELS / max(grid_shape[:2]))
    return max(1, by_tile, by_grid)


def finish_grid(
    grid: np.ndarray,
    path: str | Path,
    scale: int | None,
    *,
    tile_shape: tuple[int, ...],
    title: str,
    row_labels: Sequence[tuple[float, str]] = (),
    x_label: str | None = None,
    y_label: str | None = None,
) -> np.ndarray:
    """Enlarges by `scale`, adds the title and labels around the grid, writes the PNG.

    Args:
      grid: [GH, GW, 3] float in [0, 1], at scale 1.
      path: the PNG file.
      scale: integer enlargement, or None for the default (see the module docstring).
      tile_shape: (h, w) of one tile at scale 1.
      title: text of the title strip.
      row_labels: (row centre in scale-1 grid pixels, text) pairs, written left of the grid.
      x_label, y_label: axis labels below / left of the grid (y_label is rotated).

    Returns:
      uint8 [TITLE_PIXELS + GH * scale + (AXIS_LABEL_PIXELS if x_label),
      (LABEL_PIXELS if row_labels or y_label) + GW * scale, 3]; the grid's top-left pixel is at
      (TITLE_PIXELS, LABEL_PIXELS or 0).
    """
    if scale is None:
        scale = _default_scale(grid.shape, tile_shape)
    if scale < 1:
        raise ValueError(f'scale must be a positive integer, got {scale}')
    grid = np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)
    grid = np.round(grid * 255.0).astype(np.uint8)
    top, left = TITLE_PIXELS, LABEL_PIXELS if (row_labels or y_label) else 0
    bottom = AXIS_LABEL_PIXELS if x_label else 0
    height, width = top + grid.shape[0] + bottom, left + grid.shape[1]
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)

    def text(x, y, label, **kwargs):  # x, y in canvas pixels from the top left
        fig.text(x / width, 1 - y / height, label, fontsize=FONT_SIZE, **kwargs)

    text(left + grid.shape[1] / 2, top / 2, title, ha='center', va='center', weight='bold')
    for centre, label in row_labels:
        text(left - 6, top + centre * scale, label, ha='right', va='center')
    if x_label:
        text(left + grid.shape[1] / 2, top + grid.shape[0] + bottom / 2, x_label, ha='center',
             va='center')  # fmt: skip
    if y_label:
        text(left / 2, top + grid.shape[0] / 2, y_label, ha='center', va='center', rotation=90)
    drawn = canvas.draw(fig)
    # The canvas may differ from (height, width) by a pixel of float rounding: crop or pad.
    rgb = np.full((height, width, 3), 255, np.uint8)
    h, w = min(height, drawn.shape[0]), min(width, drawn.shape[1])
    rgb[:h, :w] = drawn[:h, :w]
    rgb[top : top + grid.shape[0], left : left + grid.shape[1]] = grid
    return canvas.write(rgb, path)


def reconstructions(
    inputs: np.ndarray,
    recons: np.ndarray,
    path: str | Path,
    *,
    ncols: int | None = None,
    scale: int | None = None,
) -> np.ndarray:
    """Inputs and their reconstructions: each row of inputs with its reconstructions beneath.

    Rows come in pairs: row 2r holds inputs r * ncols ... (r + 1) * ncols - 1 and row 2r + 1
    their reconstructions, so each reconstruction sits directly below its input.

    Args:
      inputs: [N, H, W, C] in [0, 1], C = 1 or 3.
      recons: [N, H, W, C] in [0, 1] (e.g. the likelihood's mean at the posterior mean).
      path: the PNG file to write.
      ncols: images per row; default min(N, 8).
      scale: integer enlargement; default: see the module docstring.

    Returns:
      The RGB image written, uint8 [TITLE_PIXELS + (2 R (H + PAD) + PAD) * scale, LABEL_PIXELS
      + (ncols (W + PAD) + PAD) * scale, 3] with R = ceil(N / ncols); each row is labelled
      'data' or 'reconstruction' on the left.

    Raises:
      ValueError: inputs and recons differ in shape, or are not [N, H, W, 1 or 3].
    """
    if np.shape(inputs) != np.shape(recons):
        raise ValueError(
            f'inputs and recons must have the same shape, got {np.shape(inputs)} and '
            f'{np.shape(recons)}'
        )
    inputs, recons = to_rgb(inputs), to_rgb(recons)
    n = inputs.shape[0]
    ncols = min(n, 8) if ncols is None else ncols
    nrows = -(-n // ncols)
    # Interleave rows: [inputs of row r, reconstructions of row r] for each r.
    blank = np.full((nrows * ncols - n,) + inputs.shape[1:], PAD_VALUE, np.float32)
    rows_in = np.concatenate([inputs, blank]).reshape((nrows, ncols) + inputs.shape[1:])
    rows_out = np.concatenate([recons, blank]).reshape((nrows, ncols) + inputs.shape[1:])
    tiles = np.stack([rows_in, rows_out], axis=1).reshape((-1,) + inputs.shape[1:])
    tile_h = inputs.shape[1] + PAD
    labels = [
        (PAD + (2 * r + i) * tile_h + inputs.shape[1] / 2, name)
        for r in range(nrows)
        for i, name in enumerate(('data', 'reconstruction'))
    ]
    return finish_grid(
        tile(tiles, 2 * nrows, ncols),
        path,
        scale,
        tile_shape=inputs.shape[1:],
        title='data and reconstructions',
        row_labels=labels,
    )


def samples(
    images: np.ndarray,
    path: str | Path,
    *,
    ncols: int | None = None,
    scale: int | None = None,
    title: str = 'samples: mean of p(x|z), z ~ N(0, I)',
) -> np.ndarray:
    """A grid of images (e.g. decoded prior samples).

    Args:
      images: [N, H, W, C] in [0, 1], C = 1 or 3.
      path: the PNG file to write.
      ncols: images per row; default ceil(sqrt(N)).
      scale: integer enlargement; default: see the module docstring.
      title: the title above the grid.

    Returns:
      The RGB image written, uint8 [TITLE_PIXELS + (R (H + PAD) + PAD) * scale, (ncols (W +
      PAD) + PAD) * scale, 3] with R = ceil(N / ncols).
    """
    images = to_rgb(images)
    n = images.shape[0]
    ncols = math.ceil(math.sqrt(n)) if ncols is None else ncols
    return finish_grid(
        tile(images, -(-n // ncols), ncols), path, scale, tile_shape=images.shape[1:], title=title
    )


def manifold_grid(latent_dim: int, *, n: int = 20, basis: np.ndarray | None = None) -> np.ndarray:
    """The latents the manifold picture decodes: standard-normal quantiles on a 2-D grid.

    u = norm.ppf(linspace(0.05, 0.95, n)). Tile (i, j) (row i from the top, column j from the
    left) holds z = u[j] * basis[0] + u[n - 1 - i] * basis[1]: the first direction grows to the
    right, the second upwards. For latent_dim 1 the grid is one row, z = u[j].

    Args:
      latent_dim: D >= 1.
      n: tiles per side.
      basis: [2, D] directions of the plane (for D > 2; orthonormal rows, e.g. the top-2
        principal directions of the posterior means from `pca`); default the first two axes.

    Returns:
      [n, n, D] (or [1, n, 1] for D = 1) float32 latents.

    Raises:
      ValueError: basis is not [2, D], or D < 1.
    """
    if latent_dim < 1:
        raise ValueError(f'latent_dim must be >= 1, got {latent_dim}')
    u = stats.norm.ppf(np.linspace(*MANIFOLD_QUANTILES, n))
    if latent_dim == 1:
        return u.reshape(1, n, 1).astype(np.float32)
    if basis is None:
        basis = np.eye(2, latent_dim)
    basis = np.asarray(basis, np.float64)
    if basis.shape != (2, latent_dim):
        raise ValueError(f'basis must be [2, D] = [2, {latent_dim}], got shape {basis.shape}')
    right, up = np.meshgrid(u, u[::-1])  # [n, n]: right[i, j] = u[j], up[i, j] = u[n-1-i]
    z = right[..., None] * basis[0] + up[..., None] * basis[1]
    return z.astype(np.float32)


def manifold(
    decode_mean: Callable[[np.ndarray], np.ndarray],
    latent_dim: int,
    path: str | Path,
    *,
    n: int = 20,
    basis: np.ndarray | None = None,
    scale: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Decoded means over a grid of latents (Kingma & Welling 2014, Fig. 4).

    Args:
      decode_mean: z [M, D] -> images [M, H, W, C] in [0, 1]; called once, M = n * n.
      latent_dim: D.
      path: the PNG file to write.
      n: tiles per side.
      basis: [2, D] plane for D > 2; see `manifold_grid`.
      scale: integer enlargement; default: see the module docstring.

    Returns:
      (the RGB image written, uint8 [TITLE_PIXELS + (n (H + PAD) + PAD) * scale +
       AXIS_LABEL_PIXELS, LABEL_PIXELS + (n (W + PAD) + PAD) * scale, 3] (no LABEL_PIXELS for
       D = 1, whose grid is one row); the latents decoded, [n, n, D] float32 laid out like the
       tiles, see `manifold_grid`).

    Raises:
      ValueError: decode_mean returns the wrong number of images.
    """
    z = manifold_grid(latent_dim, n=n, basis=basis)
    rows, cols = z.shape[:2]
    images = np.asarray(decode_mean(z.reshape(rows * cols, latent_dim)))
    if images.shape[0] != rows * cols:
        raise ValueError(
            f'decode_mean returned {images.shape[0]} images for {rows * cols} latents '
            f'(shape {images.shape})'
        )
    lo, hi = MANIFOLD_QUANTILES
    axis = 'z' if basis is None else 'principal direction'
    if latent_dim == 1:
        x_label, y_label = f'z: N(0, 1) quantiles {lo} to {hi}', None
    else:
        x_label = f'{axis} 1: N(0, 1) quantiles {lo} to {hi}'
        y_label = f'{axis} 2 (upwards)'
    grid = finish_grid(
        tile(to_rgb(images), rows, cols),
        path,
        scale,
        tile_shape=images.shape[1:],
        title='decoded means over a latent grid',
        x_label=x_label,
        y_label=y_label,
    )
    return grid, z


# ---------------------------------------------------------------------------------------------
# Charts.


def pca(z: np.ndarray, num_components: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Principal directions of z by SVD (float64), with a deterministic sign.

    Args:
      z: [N, D].
      num_components: k <= D.

    Returns:
      (mean [D], basis [k, D] orthonormal rows, largest variance first, each with its
       largest-magnitude entry positive; explained variance ratio [k]).
    """
    z = np.asarray(z, np.float64)
    mean = z.mean(axis=0)
    _, s, vt = np.linalg.svd(z - mean, full_matrices=False)
    basis = vt[:num_components]
    signs = np.sign(basis[np.arange(len(basis)), np.argmax(np.abs(basis), axis=1)])
    basis = basis * signs[:, None]
    total = np.sum(s**2)
    ratio = s[:num_components] ** 2 / total if total > 0 else np.zeros(len(basis))
    return mean, basis, ratio


def latent_scatter(z: np.ndarray, labels: np.ndarray | None, path: str | Path) -> np.ndarray:
    """Latent codes (e.g. posterior means) in 2-D, coloured by label.

    D = 2 is drawn as is; D > 2 is projected on its top-2 principal directions (`pca`); D = 1 is
    drawn against the label.

    Args:
      z: [N, D] latent codes.
      labels: [N] int labels, or None.
      path: the PNG file to write.

    Returns:
      The RGB image written, uint8 [CHART_INCHES * DPI, CHART_INCHES * DPI, 3].

    Raises:
      ValueError: z is not [N, D] or labels do not match.
    """
    z = np.asarray(z, np.float64)
    if z.ndim != 2:
        raise ValueError(f'z must be [N, D], got shape {z.shape}')
    n, d = z.shape
    if labels is not None and np.shape(labels) != (n,):
        raise ValueError(f'labels must be [N] = [{n}], got shape {np.shape(labels)}')
    fig = Figure(figsize=(CHART_INCHES, CHART_INCHES), dpi=DPI)
    ax = fig.add_subplot()
    if d > 2:
        mean, basis, ratio = pca(z)
        xy = (z - mean) @ basis.T
        ax.set_xlabel(f'PC 1 ({100 * ratio[0]:.0f}% of variance)')
        ax.set_ylabel(f'PC 2 ({100 * ratio[1]:.0f}% of variance)')
        ax.set_title(f'{d}-d latents, top-2 principal directions')
    elif d == 2:
        xy = z
        ax.set_xlabel('z 1')
        ax.set_ylabel('z 2')
        ax.set_title('2-d latents')
    else:
        xy = np.stack([z[:, 0], np.zeros(n) if labels is None else labels], axis=1)
        ax.set_xlabel('z')
        ax.set_ylabel('label')
        ax.set_title('1-d latents')
    if labels is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=4, alpha=0.6)
    elif len(np.unique(labels)) <= 10:
        points = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap='tab10', s=4, alpha=0.7)
        ax.legend(*points.legend_elements(), title='label', fontsize='small', loc='best')
    else:  # Too many labels for a legend: a colour bar says which colour is which.
        points = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap='viridis', s=4, alpha=0.7)
        fig.colorbar(points, ax=ax, label='label')
    fig.tight_layout()
    return canvas.render(fig, path)


def _density_image(ax, density, extent, title, norm):
    image = ax.imshow(
        density, origin='lower', extent=extent, aspect='auto', cmap='viridis', norm=norm
    )
    ax.set_title(title)
    return image


def _density_scale_max(model: np.ndarray, true: np.ndarray | None = None) -> float:
    """Top of the shared density scale: the larger of the true density's maximum and the
    model's 99.5th percentile. Not the model's maximum: an importance-sampled log p(x) has rare
    large overestimates, and one such pixel would wash out both panels; pixels above the scale
    show at the top colour (the colour bar then has an arrow)."""
    top = float(np.percentile(model, DENSITY_SCALE_PERCENTILE))
    if true is not None:
        top = max(top, float(np.max(true)))
    return top if top > 0 else 1.0


def toy_density(
    data: np.ndarray,
    samples: np.ndarray,
    grid_x: np.ndarray,
    grid_y: np.ndarray,
    model_log_density: np.ndarray,
    true_log_density: np.ndarray | None,
    path: str | Path,
) -> np.ndarray:
    """2-D toy data: data and model samples overlaid; the model's density beside the true one.

    The density panels share one linear colour scale and one colour bar, so the model and the
    true density are compared on the same scale (from 0 to the larger of the true maximum and
    the model's 99.5th percentile, see `_density_scale_max`).

    Args:
      data: [N, 2] data points.
      samples: [M, 2] model samples.
      grid_x: [G] x coordinates (or the [G, G] first output of np.meshgrid(grid_x, grid_y)).
      grid_y: [G'] y coordinates (or the [G', G] second output of np.meshgrid).
      model_log_density: [G', G] model log density; entry [i, j] is at (grid_x[j], grid_y[i])
        (np.meshgrid's default 'xy' layout).
      true_log_density: [G', G] the true log density, or None.
      path: the PNG file to write.

    Returns:
      The RGB image written, uint8 [CHART_INCHES * DPI, P * CHART_INCHES * DPI, 3] with P = 3
      panels (2 without a true density).

    Raises:
      ValueError: shapes do not match.
    """
    grid_x, grid_y = np.asarray(grid_x), np.asarray(grid_y)
    gx = grid_x[0] if grid_x.ndim == 2 else grid_x
    gy = grid_y[:, 0] if grid_y.ndim == 2 else grid_y
    expected = (gy.shape[0], gx.shape[0])
    if np.shape(model_log_density) != expected:
        raise ValueError(
            f'model_log_density must be [len(grid_y), len(grid_x)] = {expected}, got '
            f'{np.shape(model_log_density)}'
        )
    if true_log_density is not None and np.shape(true_log_density) != expected:
        raise ValueError(
            f'true_log_density must be {expected} like model_log_density, got '
            f'{np.shape(true_log_density)}'
        )
    data, samples = np.asarray(data), np.asarray(samples)
    if data.ndim != 2 or data.shape[1] != 2 or samples.ndim != 2 or samples.shape[1] != 2:
        raise ValueError(
            f'data and samples must be [N, 2] and [M, 2], got {data.shape} and {samples.shape}'
        )
    panels = 2 if true_log_density is None else 3
    # Constrained layout makes room for the colour bar (tight_layout would not).
    fig = Figure(figsize=(panels * CHART_INCHES, CHART_INCHES), dpi=DPI, layout='constrained')
    axes = fig.subplots(1, panels)
    extent = (gx[0], gx[-1], gy[0], gy[-1])
    axes[0].scatter(data[:, 0], data[:, 1], s=2, c='0.5', alpha=0.5, label='data')
    axes[0].scatter(samples[:, 0], samples[:, 1], s=2, c='tab:red', alpha=0.5, label='samples')
    axes[0].set_xlim(extent[:2])
    axes[0].set_ylim(extent[2:])
    axes[0].legend(loc='upper right', markerscale=4)
    axes[0].set_title('data and model samples')
    # Densities, not log densities, on one linear scale shared by the model and the true panel,
    # so equal colours mean equal p(x). exp is safe: these densities are O(1) at most.
    densities = [np.exp(np.asarray(model_log_density, np.float64))]
    if true_log_density is not None:
        densities.append(np.exp(np.asarray(true_log_density, np.float64)))
    norm = colors.Normalize(0.0, _density_scale_max(*densities))
    titles = ('model density p(x) (importance-sampled)', 'true density')
    for ax, density, title in zip(axes[1:], densities, titles, strict=False):
        image = _density_image(ax, density, extent, title, norm)
    above = max(float(np.max(d)) for d in densities) > norm.vmax
    for ax in axes:
        ax.set_aspect('equal')
        ax.set_xlabel('x 1')
        ax.set_ylabel('x 2')
    fig.colorbar(
        image,
        ax=list(axes[1:]),
        label='density (shared scale)',
        shrink=0.85,
        extend='max' if above else 'neither',  # an arrow: some model values are above the scale
    )
    return canvas.render(fig, path)


# Training curves (vae_jax/curves.py) under their names here.
CURVE_INCHES = curves.CURVE_INCHES
LOG_STEPS_RATIO = curves.LOG_STEPS_RATIO
training_curves = curves.training_curves
