"""Toy 2-D data sets made in code, and the true densities they are drawn from (density plots).

Toy 2-D sets (data shape `(2,)`, points unscaled), `input.toy_num_examples` points per split,
train and test drawn with different fixed seeds:
`eight_gaussians`: equal mixture of 8 Gaussians centred on a radius-5 circle at angles
2*pi*k/8, isotropic std `input.toy_noise`; label = component k.
`two_moons`: `sklearn.datasets.make_moons` without noise, scaled by 2 and centred on the
origin (x in [-3, 3], y in [-1.5, 1.5]), plus isotropic Gaussian noise of std
`input.toy_noise` (the default 0.2 equals FFJORD's moons: noise 0.1 before the x2 scale);
label = moon.
`pinwheel`: Johnson et al. (2016) / FFJORD's 5-armed pinwheel (radial std 0.3, tangential
std 0.1, rate 0.25, times 2); label = arm. Fixed definition: `toy_noise` does not apply.
`checkerboard`: FFJORD's checkerboard, uniform on the 8 "black" 2x2 squares of [-4, 4]^2;
label 0. Fixed definition: `toy_noise` does not apply.

`data.get_datasets` draws them (input.dataset, input.toy_num_examples, input.toy_noise); the
names here are also importable from `vae_jax.data`.

References: Johnson et al. (2016) and Grathwohl et al. (2019, FFJORD) toy 2-D sets.
"""

import math

import numpy as np

TOY_DATASETS = ('eight_gaussians', 'two_moons', 'pinwheel', 'checkerboard')
EIGHT_GAUSSIANS_RADIUS = 5.0
_MOONS_SCALE = 2.0
_MOONS_CENTRE = np.array([0.5, 0.25])  # Centre of make_moons' bounding box [-1, 2] x [-0.5, 1].
# Pinwheel (FFJORD's constants): features (r, t) ~ N((1, 0), diag(0.3, 0.1)^2), arm k uniform.
_PINWHEEL_RADIAL_MEAN = 1.0
_PINWHEEL_RADIAL_STD = 0.3
_PINWHEEL_TANGENTIAL_STD = 0.1
_PINWHEEL_NUM_ARMS = 5
_PINWHEEL_RATE = 0.25
_PINWHEEL_SCALE = 2.0
# Angles on which the pinwheel density's preimages are bracketed, and bisection steps per root.
_PINWHEEL_GRID = 1024
_PINWHEEL_BISECTIONS = 40


def make_toy(name: str, num_examples: int, noise: float, *, seed: int) -> dict[str, np.ndarray]:
    """Draws a toy 2-D data set (definitions in the module docstring).

    Args:
      name: one of `TOY_DATASETS`.
      num_examples: N.
      noise: Gaussian noise std for eight_gaussians and two_moons; pinwheel and checkerboard
        have fixed standard definitions and do not use it.
      seed: int seed of `np.random.default_rng`.

    Returns:
      `{'image': float32 [N, 2], 'label': int32 [N]}`.
    """
    rng = np.random.default_rng(seed)
    if name == 'eight_gaussians':
        label = rng.integers(0, 8, num_examples)
        points = eight_gaussians_centres()[label] + noise * rng.standard_normal((num_examples, 2))
    elif name == 'two_moons':
        from sklearn import datasets  # Imported here: sklearn takes ~2 s to import.

        moons, label = datasets.make_moons(
            num_examples, noise=None, random_state=int(rng.integers(2**31))
        )
        points = _MOONS_SCALE * (moons - _MOONS_CENTRE) + noise * rng.standard_normal(
            (num_examples, 2)
        )
    elif name == 'pinwheel':
        label = rng.permutation(np.arange(num_examples) % _PINWHEEL_NUM_ARMS)
        features = rng.standard_normal((num_examples, 2)) * np.array(
            [_PINWHEEL_RADIAL_STD, _PINWHEEL_TANGENTIAL_STD]
        )
        features[:, 0] += _PINWHEEL_RADIAL_MEAN
        angles = 2 * np.pi * label / _PINWHEEL_NUM_ARMS + _PINWHEEL_RATE * np.exp(features[:, 0])
        cos, sin = np.cos(angles), np.sin(angles)
        # As FFJORD: features @ [[cos, -sin], [sin, cos]], then times 2.
        points = _PINWHEEL_SCALE * np.stack(
            [
                features[:, 0] * cos + features[:, 1] * sin,
                -features[:, 0] * sin + features[:, 1] * cos,
            ],
            axis=-1,
        )
    elif name == 'checkerboard':
        x1 = rng.random(num_examples) * 4 - 2
        x2 = rng.random(num_examples) - rng.integers(0, 2, num_examples) * 2 + np.floor(x1) % 2
        points = 2 * np.stack([x1, x2], axis=-1)
        label = np.zeros((num_examples,), np.int64)
    else:
        raise ValueError(
            f'make_toy: {name!r} is not a toy set; allowed: {", ".join(TOY_DATASETS)}.'
        )
    return {'image': points.astype(np.float32), 'label': label.astype(np.int32)}


def eight_gaussians_centres() -> np.ndarray:
    """The 8 mixture centres, [8, 2] float64: radius 5, angle 2*pi*k/8 for component k."""
    angles = 2 * np.pi * np.arange(8) / 8
    return EIGHT_GAUSSIANS_RADIUS * np.stack([np.cos(angles), np.sin(angles)], axis=-1)


def true_log_density(name: str, points: np.ndarray, noise: float) -> np.ndarray:
    """Log density of the distribution a toy 2-D set is drawn from (for density plots).

    eight_gaussians: the exact mixture. two_moons: the limit distribution (uniform angle along
    each half circle, convolved with the Gaussian noise), by quadrature over the angle.
    checkerboard: exact, log(1/32) on the black squares and -inf elsewhere. pinwheel: exact
    change of variables with numerically found preimages (see `_pinwheel_log_density`).

    Args:
      name: one of `TOY_DATASETS`.
      points: [M, 2].
      noise: the `input.toy_noise` the set was drawn with (> 0 for eight_gaussians and
        two_moons; unused by checkerboard and pinwheel).

    Returns:
      float64 [M] log densities.

    Raises:
      ValueError: unknown name, bad `points` shape, or noise <= 0 for eight_gaussians or
        two_moons (with no noise they are point masses and curves, which have no density).
    """
    points = np.asarray(points, np.float64)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f'true_log_density: points must be [M, 2], got {points.shape}.')
    if name == 'checkerboard':
        cell = np.floor(points / 2)  # Unit-square indices before FFJORD's x2 scale.
        in_box = np.all((points >= -4) & (points < 4), axis=-1)
        inside = in_box & (cell.sum(-1) % 2 == 0)
        return np.where(inside, -np.log(32.0), -np.inf)
    if name == 'pinwheel':
        return _pinwheel_log_density(points)
    if name not in ('eight_gaussians', 'two_moons'):
        raise ValueError(
            f'true_log_density: {name!r} is not a toy set; allowed: {", ".join(TOY_DATASETS)}.'
        )
    if not noise > 0:
        raise ValueError(f'true_log_density({name!r}): noise must be > 0, got {noise!r}.')
    if name == 'eight_gaussians':
        centres = eight_gaussians_centres()
        weights = np.full(8, 1 / 8)
    else:
        # Midpoint rule over each moon's angle, arc spacing <= noise / 4: a Gaussian summed on a
        # lattice that fine matches its integral to ~exp(-2 pi^2 16), so only the ends add error.
        num_angles = max(64, math.ceil(4 * np.pi * _MOONS_SCALE / noise))
        t = (np.arange(num_angles) + 0.5) * np.pi / num_angles
        outer = np.stack([np.cos(t), np.sin(t)], axis=-1)
        inner = np.stack([1 - np.cos(t), 0.5 - np.sin(t)], axis=-1)
        centres = _MOONS_SCALE * (np.concatenate([outer, inner]) - _MOONS_CENTRE)
        weights = np.full(2 * num_angles, 1 / (2 * num_angles))
    return _log_gaussian_mixture(points, centres, weights, noise)


def _pinwheel_log_density(points: np.ndarray) -> np.ndarray:
    """Exact log density of the pinwheel (`make_toy`) by a change of variables.

    A point is x = s R(-a) f: features f = (r, t) ~ N((m, 0), diag(sr, st)^2), arm k uniform
    over K, angle a = 2 pi k / K + rate exp(r), scale s. In polar coordinates f = rho (cos psi,
    sin psi), the rotation keeps rho and moves the angle to phi = psi - a, so x / s has polar
    coordinates (rho, h(psi) - 2 pi k / K) with h(psi) = psi - rate exp(rho cos psi). Both polar
    area elements are rho d(rho) d(angle), so

        p(x) = s^-2 sum over (k, psi) with h(psi) - 2 pi k / K = phi (mod 2 pi) of
               N(f(psi)) / (K |h'(psi)|),   h'(psi) = 1 + rate rho sin(psi) exp(rho cos psi).

    The preimages are the solutions psi in [-pi, pi) of h(psi) - phi = 2 pi j / K for integers
    j (each j is one arm); since h(pi) - h(-pi) = 2 pi there are at least K of them (more where
    h is not monotone, far from the data). They are bracketed on `_PINWHEEL_GRID` angles (where
    floor((h - phi) K / 2 pi) changes) and refined by `_PINWHEEL_BISECTIONS` bisection steps to
    float64 precision; a grid 8x finer changes the result by < 1e-11 nats on N(0, 9 I) points.
    A root pair closer together than one grid step (at a fold of h, >= 10 std from the data)
    would be missed.

    Args:
      points: float64 [M, 2].

    Returns:
      float64 [M] log densities.
    """
    y = points / _PINWHEEL_SCALE
    level_gap = 2 * np.pi / _PINWHEEL_NUM_ARMS
    psi = np.linspace(-np.pi, np.pi, _PINWHEEL_GRID + 1)

    def levels(angle, rho, phi):  # (h(angle) - phi) in units of the angle between arms
        return (angle - _PINWHEEL_RATE * np.exp(rho * np.cos(angle)) - phi) / level_gap

    out = np.empty(len(points))
    chunk = 1024  # [chunk, grid] float64 buffers of 8 MB.
    for start in range(0, len(points), chunk):
        rho = np.hypot(y[start : start + chunk, 0], y[start : start + chunk, 1])
        phi = np.arctan2(y[start : start + chunk, 1], y[start : start + chunk, 0])
        index = np.floor(levels(psi[None], rho[:, None], phi[:, None]))  # [chunk, grid + 1]
        point, cell = np.nonzero(index[:, 1:] != index[:, :-1])
        low = np.minimum(index[point, cell], index[point, cell + 1])
        count = np.abs(index[point, cell + 1] - index[point, cell]).astype(np.int64)
        # One root per integer level crossed within a cell: levels low + 1, ..., low + count.
        point, cell, low = (np.repeat(v, count) for v in (point, cell, low))
        offset = np.arange(len(point)) - np.repeat(np.cumsum(count) - count, count)
        target = low + 1 + offset
        left, right = psi[cell], psi[cell + 1]
        rho_k, phi_k = rho[point], phi[point]
        f_left = levels(left, rho_k, phi_k) - target
        for _ in range(_PINWHEEL_BISECTIONS):
            mid = 0.5 * (left + right)
            f_mid = levels(mid, rho_k, phi_k) - target
            keep_right = np.sign(f_mid) == np.sign(f_left)
            left = np.where(keep_right, mid, left)
            f_left = np.where(keep_right, f_mid, f_left)
            right = np.where(keep_right, right, mid)
        root = 0.5 * (left + right)
        r, t = rho_k * np.cos(root), rho_k * np.sin(root)
        slope = 1 + _PINWHEEL_RATE * rho_k * np.sin(root) * np.exp(r)
        log_terms = (
            -0.5 * ((r - _PINWHEEL_RADIAL_MEAN) / _PINWHEEL_RADIAL_STD) ** 2
            - 0.5 * (t / _PINWHEEL_TANGENTIAL_STD) ** 2
            - np.log(2 * np.pi * _PINWHEEL_RADIAL_STD * _PINWHEEL_TANGENTIAL_STD)
            - np.log(_PINWHEEL_NUM_ARMS * np.abs(slope))
            - 2 * np.log(_PINWHEEL_SCALE)
        )
        # log-sum-exp over each point's roots (every point has >= K of them).
        peak = np.full(len(rho), -np.inf)
        np.maximum.at(peak, point, log_terms)
        total = np.zeros(len(rho))
        np.add.at(total, point, np.exp(log_terms - peak[point]))
        out[start : start + chunk] = peak + np.log(total)
    return out


def _log_gaussian_mixture(
    points: np.ndarray, centres: np.ndarray, weights: np.ndarray, std: float
) -> np.ndarray:
    """log sum_j w_j N(x; c_j, std^2 I) for x [M, 2], c [J, 2], w [J] -> [M], chunked over M."""
    out = np.empty(len(points))
    chunk = max(1, 2**22 // len(centres))  # Bounds the [chunk, J] buffer at ~32 MB.
    for start in range(0, len(points), chunk):
        x = points[start : start + chunk]
        # |x - c|^2 expanded into a matmul (float64: the cancellation is harmless at this scale).
        sq = (x**2).sum(-1)[:, None] - 2 * x @ centres.T + (centres**2).sum(-1)[None, :]
        sq = np.maximum(sq, 0.0)
        log_terms = np.log(weights)[None, :] - sq / (2 * std**2) - np.log(2 * np.pi * std**2)
        peak = log_terms.max(-1, keepdims=True)  # logsumexp: subtract the max for stability.
        out[start : start + chunk] = peak[:, 0] + np.log(np.exp(log_terms - peak).sum(-1))
    return out
