"""Figures to pixels and PNG files: the one place pictures are rasterised and written.

matplotlib's object API with the Agg canvas (no pyplot, no global backend state), so drawing is
safe in a headless trainer. A figure is `figsize * DPI` pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

DPI = 100


def draw(fig: Figure) -> np.ndarray:
    """The figure's pixels: uint8 [H, W, 3] RGB."""
    agg = FigureCanvasAgg(fig)
    agg.draw()
    return np.array(agg.buffer_rgba())[..., :3]


def write(rgb: np.ndarray, path: str | Path) -> np.ndarray:
    """Writes uint8 [H, W, 3] `rgb` as a PNG (creating its directory) and returns it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rgb, mode='RGB').save(path)
    return rgb


def render(fig: Figure, path: str | Path) -> np.ndarray:
    """Draws `fig`, writes it to `path` as a PNG and returns its pixels, uint8 [H, W, 3]."""
    return write(draw(fig), path)
