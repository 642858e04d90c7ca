"""Pictures of a run: reconstructions, samples, latent scatter, 2-D manifold, toy density, curves.

numpy in, PNG out. Each function writes its PNG and returns the RGB image it wrote, uint8
[H, W, 3] (the PNG holds exactly these pixels), so the trainer can also log it to TensorBoard.

Image grids (reconstructions, samples, manifold) are drawn pixel for pixel, not through a
matplotlib figure: tiles of [h, w] pixels separated by `pad` grey pixels, the whole grid enlarged
by an integer `scale` (nearest neighbour; by default the smallest scale >= 1 that makes the long
side at least `MIN_GRID_PIXELS`). A grid of r x c tiles is therefore
[(r (h + pad) + pad) * scale, (c (w + pad) + pad) * scale, 3].

Charts use matplotlib's object API with the Agg canvas (no pyplot, no global backend state), so
they are safe in a headless trainer. Their size is `figsize * DPI` pixels.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from scipy import stats

DPI = 100
PAD = 1  # pixels between tiles
PAD_VALUE = 0.5  # grey, distinct from black and white pixels
MIN_GRID_PIXELS = 256
CHART_INCHES = 5.0  # one scatter / density panel is CHART_INCHES x CHART_INCHES
CURVE_INCHES = (4.5, 3.5)  # one training-curve panel (width, height)
MANIFOLD_QUANTILES = (0.05, 0.95)


# ---------------------------------------------------------------------------------------------
# Pixel grids.


def _to_rgb(images: np.ndarray) -> np.ndarray:
    """[N, H, W, C] in [0, 1] (C = 1 or 3) -> [N, H, W, 3] float, clipped."""
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(f'images must be [N, H, W, C] with C = 1 or 3, got shape {images.shape}')
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    return np.clip(images, 0.0, 1.0)


def _tile(images: np.ndarray, nrows: int, ncols: int) -> np.ndarray:
    """[N <= nrows * ncols, H, W, 3] -> [nrows (H + PAD) + PAD, ncols (W + PAD) + PAD, 3] float."""
    _, h, w, _ = images.shape
    grid = np.full((nrows * (h + PAD) + PAD, ncols * (w + PAD) + PAD, 3), PAD_VALUE, np.float32)
    for i, image in enumerate(images):
        r, c = divmod(i, ncols)
        top, left = PAD + r * (h + PAD), PAD + c * (w + PAD)
        grid[top : top + h, left : left + w] = image
    return grid


def _finish_grid(grid: np.ndarray, path: str | Path, scale: int | None) -> np.ndarray:
    """Enlarges by `scale` (default: to MIN_GRID_PIXELS), converts to uint8, writes the PNG."""
    if scale is None:
        scale = max(1, math.ceil(MIN_GRID_PIXELS / max(grid.shape[:2])))
    if scale < 1:
        raise ValueError(f'scale must be a positive integer, got {scale}')
    grid = np.repeat(np.repeat(grid, scale, axis=0), scale, axis=1)
    return _write(np.round(grid * 255.0).astype(np.uint8), path)


def _write(rgb: np.ndarray, path: str | Path) -> np.ndarray:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb, mode='RGB').save(path)
    return rgb


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
      scale: integer enlargement; default the smallest giving a long side >= MIN_GRID_PIXELS.

    Returns:
      The RGB image written, uint8 [(2 R (H + PAD) + PAD) * scale, (ncols (W + PAD) + PAD) *
      scale, 3] with R = ceil(N / ncols).

    Raises:
      ValueError: inputs and recons differ in shape, or are not [N, H, W, 1 or 3].
    """
    if np.shape(inputs) != np.shape(recons):
        raise ValueError(
            f'inputs and recons must have the same shape, got {np.shape(inputs)} and '
            f'{np.shape(recons)}'
        )
    inputs, recons = _to_rgb(inputs), _to_rgb(recons)
    n = inputs.shape[0]
    ncols = min(n, 8) if ncols is None else ncols
    nrows = -(-n // ncols)
    # Interleave rows: [inputs of row r, reconstructions of row r] for each r.
    blank = np.full((nrows * ncols - n,) + inputs.shape[1:], PAD_VALUE, np.float32)
    rows_in = np.concatenate([inputs, blank]).reshape((nrows, ncols) + inputs.shape[1:])
    rows_out = np.concatenate([recons, blank]).reshape((nrows, ncols) + inputs.shape[1:])
    tiles = np.stack([rows_in, rows_out], axis=1).reshape((-1,) + inputs.shape[1:])
    return _finish_grid(_tile(tiles, 2 * nrows, ncols), path, scale)


def samples(
    images: np.ndarray, path: str | Path, *, ncols: int | None = None, scale: int | None = None
) -> np.ndarray:
    """A grid of images (e.g. decoded prior samples).

    Args:
      images: [N, H, W, C] in [0, 1], C = 1 or 3.
      path: the PNG file to write.
      ncols: images per row; default ceil(sqrt(N)).
      scale: integer enlargement; default the smallest giving a long side >= MIN_GRID_PIXELS.

    Returns:
      The RGB image written, uint8 [(R (H + PAD) + PAD) * scale, (ncols (W + PAD) + PAD) *
      scale, 3] with R = ceil(N / ncols).
    """
    images = _to_rgb(images)
    n = images.shape[0]
    ncols = math.ceil(math.sqrt(n)) if ncols is None else ncols
    return _finish_grid(_tile(images, -(-n // ncols), ncols), path, scale)


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
      scale: integer enlargement; default the smallest giving a long side >= MIN_GRID_PIXELS.

    Returns:
      (the RGB image written, uint8 [(n (H + PAD) + PAD) * scale, (n (W + PAD) + PAD) * scale, 3];
       the latents decoded, [n, n, D] float32 laid out like the tiles, see `manifold_grid`).

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
    return _finish_grid(_tile(_to_rgb(images), rows, cols), path, scale), z


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


def _render(fig: Figure, path: str | Path) -> np.ndarray:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    rgb = np.array(canvas.buffer_rgba())[..., :3]
    return _write(rgb, path)


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
    else:
        xy = np.stack([z[:, 0], np.zeros(n) if labels is None else labels], axis=1)
        ax.set_xlabel('z')
        ax.set_ylabel('label')
    if labels is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=4, alpha=0.6)
    else:
        points = ax.scatter(xy[:, 0], xy[:, 1], c=labels, cmap='tab10', s=4, alpha=0.7)
        if len(np.unique(labels)) <= 10:
            ax.legend(*points.legend_elements(), title='label', fontsize='small', loc='best')
    fig.tight_layout()
    return _render(fig, path)


def _density_image(ax, log_density, extent, title):
    # Normalise by the maximum in log space before exp: exp(log p) underflows far from the modes.
    density = np.exp(log_density - np.max(log_density))
    ax.imshow(density, origin='lower', extent=extent, aspect='auto', cmap='viridis')
    ax.set_title(title)


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
    fig = Figure(figsize=(panels * CHART_INCHES, CHART_INCHES), dpi=DPI)
    axes = fig.subplots(1, panels)
    extent = (gx[0], gx[-1], gy[0], gy[-1])
    axes[0].scatter(data[:, 0], data[:, 1], s=2, c='0.5', alpha=0.5, label='data')
    axes[0].scatter(samples[:, 0], samples[:, 1], s=2, c='tab:red', alpha=0.5, label='samples')
    axes[0].set_xlim(extent[:2])
    axes[0].set_ylim(extent[2:])
    axes[0].legend(loc='upper right', markerscale=4)
    axes[0].set_title('data and model samples')
    _density_image(axes[1], np.asarray(model_log_density, np.float64), extent, 'model density')
    if true_log_density is not None:
        _density_image(axes[2], np.asarray(true_log_density, np.float64), extent, 'true density')
    for ax in axes:
        ax.set_aspect('equal')
    fig.tight_layout()
    return _render(fig, path)


_CURVE_PANELS = (
    ('loss', lambda name: name == 'loss'),
    ('bounds (nats)', lambda name: name in ('elbo', 'nll') or name.startswith('iwae_k')),
    ('recon and KL (nats)', lambda name: name in ('recon', 'kl')),
)


def training_curves(metrics_jsonl_path: str | Path, path: str | Path) -> np.ndarray:
    """Loss, bounds, and recon/KL over steps, from a run's metrics.jsonl.

    Each line is a JSON object with 'step' and keys like 'train/loss', 'eval/elbo',
    'eval/iwae_k10'. Panels (those with data): loss; bounds (elbo, iwae_k*, nll); recon and kl.
    Train curves are solid, eval curves dashed with markers.

    Args:
      metrics_jsonl_path: the metrics.jsonl file.
      path: the PNG file to write.

    Returns:
      The RGB image written, uint8 [CURVE_INCHES[1] * DPI, P * CURVE_INCHES[0] * DPI, 3] for P
      panels.

    Raises:
      ValueError: the file has no plottable metrics.
    """
    series: dict[str, tuple[list[int], list[float]]] = {}
    for line in Path(metrics_jsonl_path).read_text().splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        for key, value in row.items():
            if '/' not in key or not isinstance(value, int | float):
                continue
            steps, values = series.setdefault(key, ([], []))
            steps.append(row['step'])
            values.append(float(value))
    panels = []
    for title, wanted in _CURVE_PANELS:
        keys = sorted(k for k in series if wanted(k.split('/', 1)[1]))
        if keys:
            panels.append((title, keys))
    if not panels:
        raise ValueError(
            f'{metrics_jsonl_path} has no loss/elbo/iwae/recon/kl metrics to plot '
            f'(keys found: {sorted(series)})'
        )
    width, height = CURVE_INCHES
    fig = Figure(figsize=(len(panels) * width, height), dpi=DPI)
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    for ax, (title, keys) in zip(axes, panels, strict=True):
        # One colour per metric, so train/elbo and eval/elbo match; eval is dashed with markers.
        names = sorted({k.split('/', 1)[1] for k in keys})
        for key in keys:
            steps, values = series[key]
            style = {'color': f'C{names.index(key.split("/", 1)[1]) % 10}'}
            if key.startswith('eval/'):
                style.update(linestyle='--', marker='o', markersize=3)
            ax.plot(steps, values, label=key, **style)
        ax.set_title(title)
        ax.set_xlabel('step')
        ax.legend(fontsize='small')
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return _render(fig, path)
