"""Gym environments: visual styles in which every task family can be rendered.

SEED-Bench-R1 (Chen et al. 2025, arXiv 2503.24376) measures generalisation on
three levels: L1 the training distribution, L2 an unseen *environment* (other
kitchens, other scenes) with the same tasks, L3 an unseen environment and
unseen tasks. The gym's counterpart of an environment is a visual style:

background  what every pixel not covered by an object shows (:data:`BACKGROUNDS`).
palette     the RGB shade of each named colour (:data:`PALETTES`); every shade is
            nearest (Euclidean RGB) to its own name's standard colour, so an
            answer "red" stays true, also after H.264 (tested).
texture     a brightness pattern over the objects (:data:`TEXTURES`), in screen
            coordinates (a moving object slides under it), gains in [0.85, 1];
            an environment pairs it only with a palette whose every shade stays
            nearest its name at the darkest gain (tested for every environment:
            darkened, the ``deep`` yellow comes close to orange, so ``deep`` is solid).
shapes      what ``draw_square`` / ``draw_disc`` draw (:data:`SHAPE_SETS`), in the
            same boxes; the words "square" / "disc" / "ball" of the question,
            options and trace are renamed to match, so the texts stay true.

An :class:`Environment` combines one of each and is registered by name in
:data:`ENVIRONMENTS`; ``GymSpec.environment`` names it. ``default`` is the
gym's own look (near-black flat background, the standard palette, solid
fills, squares and discs) and leaves every sample byte-identical.

How it is applied (:func:`apply_environment`, called by the task registry's
wrapper, so every family gets it without code of its own): the family renders
as usual, with the shape set's drawers installed in
:data:`reelrl.gym.render.SHAPE_OVERRIDE`; then every pixel that is exactly the
default background becomes the environment's background and every pixel that
is exactly a palette colour becomes that colour's shade times the texture.
Other pixels (e.g. ``progress``'s grey (70, 70, 70) empty bar) are kept; every
background stays darker than that bar on average, so the bar's extent stays visible. The background's
and texture's random draws (noise) come from the sample's own generator after
the family has drawn from it, so a sample shows the same scene (same objects,
times and answer) in every environment, and the noise is static over the video.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Protocol

import numpy as np

from reelrl.gym.render import BACKGROUND, PALETTE, SHAPE_OVERRIDE, Box
from reelrl.registry import Registry

DEFAULT_ENVIRONMENT = "default"
"""The gym's own look; a spec naming it renders exactly as a spec without the field."""

BackgroundFn = Callable[[np.random.Generator, int, int], np.ndarray]
TextureFn = Callable[[np.random.Generator, int, int], np.ndarray]

BACKGROUNDS: Registry[BackgroundFn] = Registry("gym background")
"""``fn(rng, H, W) -> [H, W, 3] uint8`` static background image. All are dark and low in chroma."""
PALETTES: Registry[Callable[[], dict[str, tuple[int, int, int]]]] = Registry("gym palette")
"""``fn() -> {colour name: RGB}`` with every name of :data:`reelrl.gym.render.PALETTE`."""
TEXTURES: Registry[TextureFn] = Registry("gym texture")
"""``fn(rng, H, W) -> [H, W] float`` brightness gain of object pixels, in [0.85, 1]."""


# --------------------------------------------------------------------------- backgrounds


def _flat(rgb: tuple[int, int, int]) -> BackgroundFn:
    def fill(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
        return np.broadcast_to(np.asarray(rgb, dtype=np.uint8), (h, w, 3)).copy()  # [H, W, 3]

    return fill


BACKGROUNDS.register("flat")(_flat(BACKGROUND))
BACKGROUNDS.register("slate")(_flat((46, 50, 60)))


@BACKGROUNDS.register("gradient")
def _gradient(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Vertical ramp from dark navy (10, 12, 34) at the top to grey (46, 46, 56) at the bottom."""
    f = np.linspace(0.0, 1.0, h)[:, None, None]  # [H, 1, 1]
    top, bottom = np.array([10, 12, 34.0]), np.array([46, 46, 56.0])  # [3] each
    img = top + (bottom - top) * f  # [H, 1, 3]
    return np.broadcast_to(np.rint(img).astype(np.uint8), (h, w, 3)).copy()  # [H, W, 3]


@BACKGROUNDS.register("noise")
def _noise(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Static grey noise, each pixel uniform in [10, 70] (the same in every frame)."""
    g = rng.integers(10, 71, size=(h, w), dtype=np.int64).astype(np.uint8)  # [H, W]
    return np.repeat(g[:, :, None], 3, axis=2)  # [H, W, 3]


@BACKGROUNDS.register("stripes")
def _stripes(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Diagonal stripes 4 px wide, alternating (18, 18, 22) and (58, 58, 64)."""
    yy, xx = np.mgrid[0:h, 0:w]  # [H, W] each
    on = ((yy + xx) // 4) % 2 == 1  # [H, W]
    img = np.empty((h, w, 3), dtype=np.uint8)  # [H, W, 3]
    img[...] = (18, 18, 22)
    img[on] = (58, 58, 64)
    return img


# --------------------------------------------------------------------------- palettes

PALETTES.register("standard")(lambda: dict(PALETTE))
PALETTES.register("deep")(lambda: {
    "red": (190, 20, 25), "green": (20, 150, 35), "blue": (25, 45, 200), "yellow": (215, 205, 20),
    "white": (205, 205, 205), "magenta": (180, 25, 185), "cyan": (20, 180, 190), "orange": (225, 115, 10),
})
PALETTES.register("soft")(lambda: {
    "red": (235, 60, 65), "green": (80, 210, 90), "blue": (90, 115, 250), "yellow": (245, 235, 90),
    "white": (250, 250, 250), "magenta": (235, 90, 235), "cyan": (90, 230, 235), "orange": (252, 150, 40),
})


# --------------------------------------------------------------------------- textures

TEXTURES.register("solid")(lambda rng, h, w: np.ones((h, w)))


@TEXTURES.register("stripes")
def _tex_stripes(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Horizontal bands 2 px high: gain 1.0, then 0.85."""
    rows = np.where((np.arange(h) // 2) % 2 == 1, 0.85, 1.0)  # [H]
    return np.broadcast_to(rows[:, None], (h, w)).copy()  # [H, W]


@TEXTURES.register("checker")
def _tex_checker(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """4 x 4 px checkerboard: gain 1.0 and 0.85."""
    yy, xx = np.mgrid[0:h, 0:w]  # [H, W] each
    return np.where(((yy // 4) + (xx // 4)) % 2 == 1, 0.85, 1.0)  # [H, W]


@TEXTURES.register("grain")
def _tex_grain(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Static per-pixel gain uniform in [0.85, 1]."""
    return rng.uniform(0.85, 1.0, size=(h, w))  # [H, W]


# --------------------------------------------------------------------------- shape sets


def _mask_drawer(mask_fn: Callable[[int], np.ndarray]) -> Callable[[np.ndarray, Box, str], None]:
    """A drawer filling ``mask_fn(size)`` inside the box with the palette colour (as the standard shapes do)."""

    def draw(frame: np.ndarray, box: Box, color: str) -> None:
        y, x, s = box
        region = frame[y : y + s, x : x + s]  # [s, s, 3] view
        region[mask_fn(s)] = PALETTE[color]  # [n_in, 3]

    return draw


def diamond_mask(size: int) -> np.ndarray:
    """Boolean ``[size, size]``: the diamond (square turned 45 degrees) inscribed in the box."""
    c = (size - 1) / 2.0
    yy, xx = np.mgrid[0:size, 0:size]  # [size, size] each
    return np.abs(yy - c) + np.abs(xx - c) <= size / 2.0  # [size, size]


def triangle_mask(size: int) -> np.ndarray:
    """Boolean ``[size, size]``: the upright isosceles triangle with its base on the box's bottom edge."""
    c = (size - 1) / 2.0
    yy, xx = np.mgrid[0:size, 0:size]  # [size, size] each
    half = (yy + 1) / (2.0 * size) * size  # [size, size] half-width of row y
    return np.abs(xx - c) <= half  # [size, size]


@dataclass(frozen=True)
class ShapeSet:
    """Drawers replacing the gym's ``square`` / ``disc``, and the words that name them in texts."""

    drawers: dict[str, Callable[[np.ndarray, Box, str], None]] = field(default_factory=dict)
    words: dict[str, str] = field(default_factory=dict)
    """Whole-word renames (lower case, singular) applied to question, options and trace."""

    def rename(self, text: str) -> str:
        """``text`` with every word of :attr:`words` renamed (plurals too; a capital first letter is kept)."""
        if not self.words or not text:
            return text
        pattern = re.compile(r"\b(" + "|".join(map(re.escape, self.words)) + r")(s|es)?\b", re.IGNORECASE)

        def sub(m: re.Match[str]) -> str:
            new = self.words[m.group(1).lower()]
            new = new + ("s" if m.group(2) else "")
            return new[0].upper() + new[1:] if m.group(1)[0].isupper() else new

        return pattern.sub(sub, text)


SHAPE_SETS: Registry[Callable[[], ShapeSet]] = Registry("gym shape set")
SHAPE_SETS.register("standard")(ShapeSet)
SHAPE_SETS.register("diamonds_triangles")(lambda: ShapeSet(
    drawers={"square": _mask_drawer(diamond_mask), "disc": _mask_drawer(triangle_mask)},
    words={"square": "diamond", "disc": "triangle", "ball": "triangle"},
))


# --------------------------------------------------------------------------- environments


@dataclass(frozen=True)
class Environment:
    """A visual style: names in :data:`BACKGROUNDS`, :data:`PALETTES`, :data:`TEXTURES`, :data:`SHAPE_SETS`."""

    description: str
    background: str = "flat"
    palette: str = "standard"
    texture: str = "solid"
    shapes: str = "standard"

    def __post_init__(self) -> None:
        for reg, name in ((BACKGROUNDS, self.background), (PALETTES, self.palette),
                          (TEXTURES, self.texture), (SHAPE_SETS, self.shapes)):
            reg.get(name)  # unknown names raise, listing the valid ones

    def restyle(self, frames: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Frames ``[T, H, W, 3]`` of the default look redrawn in this style (module docstring)."""
        T, H, W, _ = frames.shape
        bg = BACKGROUNDS.get(self.background)(rng, H, W)  # [H, W, 3]
        gain = TEXTURES.get(self.texture)(rng, H, W)  # [H, W]
        shades = PALETTES.get(self.palette)()
        out = frames.copy()  # [T, H, W, 3]
        is_bg = np.all(frames == np.asarray(BACKGROUND, dtype=np.uint8), axis=-1)  # [T, H, W]
        out[is_bg] = np.broadcast_to(bg, frames.shape)[is_bg]  # [n_bg, 3]
        for name, rgb in PALETTE.items():
            mask = np.all(frames == np.asarray(rgb, dtype=np.uint8), axis=-1)  # [T, H, W]
            if mask.any():
                shaded = np.asarray(shades[name], dtype=np.float64)[None, None, :] * gain[:, :, None]  # [H, W, 3]
                shaded_u8 = np.clip(np.rint(shaded), 0, 255).astype(np.uint8)  # [H, W, 3]
                out[mask] = np.broadcast_to(shaded_u8, frames.shape)[mask]  # [n_obj, 3]
        return out


ENVIRONMENTS: Registry[Environment] = Registry("gym environment")
"""Visual styles by name; ``GymSpec.environment`` names one."""


def register_environment(name: str, env: Environment) -> Environment:
    """Register ``env`` under ``name`` in :data:`ENVIRONMENTS` (duplicates raise)."""
    ENVIRONMENTS.register(name)(env)  # type: ignore[arg-type]
    return env


register_environment(DEFAULT_ENVIRONMENT,
                     Environment("the gym's own look: near-black, standard colours, squares and discs"))
register_environment("slate_deep", Environment("flat slate-grey background, deep shades", "slate", "deep"))
register_environment("gradient_soft", Environment("navy-to-grey gradient, soft shades, striped objects",
                                                  "gradient", "soft", "stripes"))
register_environment("noise_shapes", Environment("static grey noise, diamonds for squares, triangles for discs",
                                                 "noise", "standard", "solid", "diamonds_triangles"))
register_environment("stripes_checker", Environment("diagonal stripes, standard colours, checkered objects",
                                                    "stripes", "standard", "checker"))


class _SampleLike(Protocol):
    frames: np.ndarray
    question: str
    options: list[str] | None
    reasoning: str
    meta: dict[str, Any]


@contextmanager
def drawing(name: str) -> Iterator[None]:
    """While active, ``draw_square`` / ``draw_disc`` draw environment ``name``'s shape set."""
    shapes = SHAPE_SETS.get(ENVIRONMENTS.get(name).shapes)()
    if not shapes.drawers:
        yield
        return
    token = SHAPE_OVERRIDE.set(shapes.drawers)
    try:
        yield
    finally:
        SHAPE_OVERRIDE.reset(token)


def apply_environment(sample: _SampleLike, name: str, rng: np.random.Generator) -> _SampleLike:
    """Restyle a sample rendered under :func:`drawing` (``name``): pixels, shape words, ``meta["environment"]``.

    The default environment returns the sample untouched (byte-identical frames, same texts and meta).
    """
    if name == DEFAULT_ENVIRONMENT:
        return sample
    env = ENVIRONMENTS.get(name)
    shapes = SHAPE_SETS.get(env.shapes)()
    sample.frames = env.restyle(sample.frames, rng)  # [T, H, W, 3]
    sample.question = shapes.rename(sample.question)
    sample.reasoning = shapes.rename(sample.reasoning)
    if sample.options is not None:
        sample.options = [shapes.rename(o) for o in sample.options]
    sample.meta["environment"] = name
    return sample
