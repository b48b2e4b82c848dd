"""RandAugment with timm 0.3.2 semantics, configured by a timm string such as ``rand-m9-mstd0.5-inc1``.

Why not MindSpore's ``vision.RandAugment``: it is the torchvision variant (fixed magnitude
bins, no magnitude noise, no "increasing" op set, no timm string).  The official ViG
recipe trains with timm's ``rand-m9-mstd0.5-inc1``, whose behaviour is reproduced here on
PIL images:

* ``n`` ops are drawn per image (uniformly with replacement, or without replacement by the
  weight set ``w0``); each drawn op is then applied with probability 0.5;
* the magnitude of each applied op is ``m`` plus gaussian noise of std ``mstd`` (``inf``:
  uniform in ``[0, m]``), clipped to ``[0, mmax]``; level functions divide by 10;
* signed ops (rotate, shear, translate, the "increasing" enhancements) flip their sign with
  probability 0.5;
* geometric ops fill with the dataset mean (×255, rounded) and resample with an
  interpolation drawn per call from (bilinear, bicubic) unless one is fixed.

Grammar: ``rand`` then ``-``-separated options, each at most once::

    m<int>      magnitude, 0..10 scale (default 10)
    n<int>      ops per image (default 2)
    mstd<float> std of the gaussian magnitude noise, ``inf`` = uniform in [0, m] (default 0)
    mmax<float> upper clip of the noisy magnitude (default 10)
    inc<0|1>    1 = use the "increasing" op set (default 0)
    w<int>      op-choice weight set; only 0 exists

Deviations from timm 0.3.2, all on inputs 0.3.2 mishandles: ``inc0`` means *off* (0.3.2 tests
``bool("0")``, which is True); ``mstdinf`` and ``mmax`` are parsed (0.3.2 silently ignores the
first and rejects the second; the semantics follow later timm releases); unknown options raise
``ValueError`` instead of an assertion.  Random numbers come from this module's own
per-process generator (see ``rng.py``), so sequences differ from timm's draw for draw.
"""
from __future__ import annotations

import math
import re
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from ..choices import INTERPOLATIONS
from .rng import ProcessLocalRNG

__all__ = [
    "RAND_TRANSFORMS", "RAND_INCREASING_TRANSFORMS", "RAND_CHOICE_WEIGHTS_0",
    "parse_rand_augment", "RandAugment", "apply_op", "level_to_arg", "GRAMMAR", "INTERPOLATIONS", "resample_filter",
]

MAX_LEVEL = 10.0  # the level scale of the level functions (timm's _MAX_LEVEL)

GRAMMAR = ("rand[-m<int>][-n<int>][-mstd<float>|-mstdinf][-mmax<float>][-inc<0|1>][-w0], "
           "e.g. 'rand-m9-mstd0.5-inc1'")

RAND_TRANSFORMS: Tuple[str, ...] = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd",
    "Color", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel",
    "TranslateYRel",
)
RAND_INCREASING_TRANSFORMS: Tuple[str, ...] = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing",
    "SolarizeAdd", "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing",
    "SharpnessIncreasing", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel",
)
# timm's experimental weight set 0, keyed by the names of the standard set.  timm applies it by
# position, so with ``inc1`` 'PosterizeIncreasing' gets the weight of 'Posterize', and so on.
RAND_CHOICE_WEIGHTS_0: Dict[str, float] = {
    "Rotate": 0.3, "ShearX": 0.2, "ShearY": 0.2, "TranslateXRel": 0.1, "TranslateYRel": 0.1,
    "Color": 0.025, "Sharpness": 0.025, "AutoContrast": 0.025, "Solarize": 0.005,
    "SolarizeAdd": 0.005, "Contrast": 0.005, "Brightness": 0.005, "Equalize": 0.005,
    "Posterize": 0.0, "Invert": 0.0,
}

_GEOMETRIC = {"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"}
# Resampling by name, for RandAugment and the random resized crop (transforms.py); 'random' draws
# bilinear or bicubic per call (timm's train_interpolation 'random').
_FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
assert set(INTERPOLATIONS) == set(_FILTERS) | {"random"}


def resample_filter(interpolation: str, gen: np.random.Generator) -> int:
    """The PIL filter of ``interpolation``; 'random' draws it from ``gen`` (0: bilinear, 1: bicubic)."""
    if interpolation == "random":
        return tuple(_FILTERS.values())[int(gen.integers(2))]
    return _FILTERS[interpolation]


# ----------------------------------------------------------------------------- parsing
def _bad(option: str, why: str) -> ValueError:
    return ValueError(f"RandAugment option {option!r}: {why}. Valid grammar: {GRAMMAR}")


def parse_rand_augment(config_str: str) -> Dict[str, Any]:
    """Parse a timm RandAugment string into :class:`RandAugment` keyword arguments."""
    if not isinstance(config_str, str) or not config_str:
        raise ValueError(f"RandAugment config must be a non-empty string; valid grammar: {GRAMMAR}")
    parts = config_str.split("-")
    if parts[0] != "rand":
        raise _bad(parts[0], "the string must start with 'rand'")
    out: Dict[str, Any] = {}
    seen = set()
    for part in parts[1:]:
        if not part:
            raise _bad(part, "empty option (two '-' in a row or a trailing '-')")
        match = re.match(r"(mstd|mmax|inc|m|n|w)(.*)$", part)
        if not match:
            raise _bad(part, "unknown option")
        key, val = match.groups()
        if key in seen:
            raise _bad(part, "option given twice")
        seen.add(key)
        if key in ("m", "w"):
            if not re.fullmatch(r"\d+", val):
                raise _bad(part, f"bad value {val!r}, expected an integer")
            if key == "m":
                out["magnitude"] = int(val)
            elif int(val) != 0:
                raise _bad(part, "only op-choice weight set 0 exists (as in timm)")
            else:
                out["weight_index"] = 0
        elif key == "n":
            if not re.fullmatch(r"\d+", val) or int(val) < 1:
                raise _bad(part, f"bad value {val!r}, expected an integer >= 1")
            out["num_ops"] = int(val)
        elif key == "mstd":
            if not re.fullmatch(r"\d+(\.\d*)?|\.\d+|inf", val):
                raise _bad(part, f"bad value {val!r}, expected a float >= 0 or 'inf'")
            out["magnitude_std"] = float(val)
        elif key == "mmax":
            if not re.fullmatch(r"\d+(\.\d*)?|\.\d+", val) or not float(val) > 0:
                raise _bad(part, f"bad value {val!r}, expected a float > 0")
            out["magnitude_max"] = float(val)
        elif key == "inc":
            if val not in ("0", "1"):
                raise _bad(part, f"bad value {val!r}, expected 0 or 1")
            out["increasing"] = val == "1"
    return out


# ----------------------------------------------------------------------------- ops
def _negate(value: float, rng: np.random.Generator) -> float:
    return -value if rng.random() > 0.5 else value


def level_to_arg(name: str, level: float, rng: np.random.Generator, translate_pct: float = 0.45) -> tuple:
    """Map a 0..10 level to the op's argument(s), timm 0.3.2's ``LEVEL_TO_ARG``."""
    frac = level / MAX_LEVEL
    if name in ("AutoContrast", "Equalize", "Invert"):
        return ()
    if name == "Rotate":
        return (_negate(frac * 30.0, rng),)
    if name == "Posterize":
        return (int(frac * 4),)
    if name == "PosterizeIncreasing":
        return (4 - int(frac * 4),)
    if name == "Solarize":
        return (int(frac * 256),)
    if name == "SolarizeIncreasing":
        return (256 - int(frac * 256),)
    if name == "SolarizeAdd":
        return (int(frac * 110),)
    if name in ("Color", "Contrast", "Brightness", "Sharpness"):
        return (frac * 1.8 + 0.1,)
    if name in ("ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing"):
        return (1.0 + _negate(frac * 0.9, rng),)
    if name in ("ShearX", "ShearY"):
        return (_negate(frac * 0.3, rng),)
    if name in ("TranslateXRel", "TranslateYRel"):
        return (_negate(frac * translate_pct, rng),)
    raise ValueError(f"unknown RandAugment op {name!r}")


def _posterize(img: Image.Image, bits: int) -> Image.Image:
    # Keep the top ``bits`` bits.  Written out because Pillow >= 11's ImageOps.posterize refuses
    # bits=0, which timm's levels produce (PosterizeIncreasing at magnitude 10 -> black image).
    if bits >= 8:
        return img
    mask = ~(2 ** (8 - bits) - 1) & 0xFF
    return img.point([i & mask for i in range(256)] * len(img.getbands()))


def _solarize_add(img: Image.Image, add: int, thresh: int = 128) -> Image.Image:
    lut = [min(255, i + add) if i < thresh else i for i in range(256)]
    return img.point(lut * len(img.getbands()))


def apply_op(img: Image.Image, name: str, args: tuple, *, fill: Tuple[int, ...],
             resample: int) -> Image.Image:
    """Apply one RandAugment op with already-mapped arguments to an RGB PIL image."""
    base = name.replace("Increasing", "")
    if base == "AutoContrast":
        return ImageOps.autocontrast(img)
    if base == "Equalize":
        return ImageOps.equalize(img)
    if base == "Invert":
        return ImageOps.invert(img)
    if base == "Posterize":
        return _posterize(img, args[0])
    if base == "Solarize":
        return ImageOps.solarize(img, args[0])
    if base == "SolarizeAdd":
        return _solarize_add(img, args[0])
    if base in ("Color", "Contrast", "Brightness", "Sharpness"):
        enhancer = getattr(ImageEnhance, base)
        return enhancer(img).enhance(args[0])
    if base == "Rotate":
        return img.rotate(args[0], resample=resample, fillcolor=fill)
    width, height = img.size
    if base == "ShearX":
        matrix = (1, args[0], 0, 0, 1, 0)
    elif base == "ShearY":
        matrix = (1, 0, 0, args[0], 1, 0)
    elif base == "TranslateXRel":
        matrix = (1, 0, args[0] * width, 0, 1, 0)
    elif base == "TranslateYRel":
        matrix = (1, 0, 0, 0, 1, args[0] * height)
    else:
        raise ValueError(f"unknown RandAugment op {name!r}")
    return img.transform(img.size, Image.Transform.AFFINE, matrix, resample=resample, fillcolor=fill)


# ----------------------------------------------------------------------------- transform
class RandAugment:
    """timm RandAugment on RGB PIL images (or HWC uint8 arrays, returned as arrays)."""

    def __init__(self, *, magnitude: float = 10, num_ops: int = 2, magnitude_std: float = 0.0,
                 magnitude_max: float = MAX_LEVEL, increasing: bool = False,
                 weight_index: Optional[int] = None, prob: float = 0.5, translate_pct: float = 0.45,
                 fill: Sequence[int] = (128, 128, 128), interpolation: str = "random",
                 seed: Optional[int] = None) -> None:
        if magnitude < 0:
            raise ValueError(f"magnitude must be >= 0, got {magnitude}")
        if int(num_ops) != num_ops or num_ops < 1:
            raise ValueError(f"num_ops must be a positive int, got {num_ops}")
        if not magnitude_std >= 0:
            raise ValueError(f"magnitude_std must be >= 0 (or inf), got {magnitude_std}")
        if not magnitude_max > 0:
            raise ValueError(f"magnitude_max must be > 0, got {magnitude_max}")
        if weight_index not in (None, 0):
            raise ValueError(f"only op-choice weight set 0 exists (as in timm), got {weight_index}")
        if not 0.0 <= prob <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob}")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
        self.magnitude = float(magnitude)
        self.num_ops = int(num_ops)
        self.magnitude_std = float(magnitude_std)
        self.magnitude_max = float(magnitude_max)
        self.increasing = bool(increasing)
        self.prob = float(prob)
        self.translate_pct = float(translate_pct)
        self.fill = tuple(int(v) for v in fill)
        self.interpolation = interpolation
        self.ops: Tuple[str, ...] = RAND_INCREASING_TRANSFORMS if increasing else RAND_TRANSFORMS
        if weight_index is None:
            self.choice_weights = None
        else:
            weights = np.array([RAND_CHOICE_WEIGHTS_0[name] for name in RAND_TRANSFORMS])
            self.choice_weights = weights / weights.sum()
            if self.num_ops > int(np.count_nonzero(weights)):
                raise ValueError(f"weight set 0 draws without replacement: num_ops must be <= "
                                 f"{int(np.count_nonzero(weights))}, got {self.num_ops}")
        self.rng = ProcessLocalRNG(seed, "rand_augment")

    @classmethod
    def from_string(cls, config_str: str, **kwargs: Any) -> "RandAugment":
        """Build from a timm string; ``kwargs`` are the hparams (fill, interpolation, seed, ...)."""
        return cls(**parse_rand_augment(config_str), **kwargs)

    def sample_magnitude(self, gen: np.random.Generator) -> float:
        """One noisy magnitude: m (+ gaussian noise | uniform in [0, m]), clipped to [0, mmax]."""
        magnitude = self.magnitude
        if self.magnitude_std == math.inf:
            magnitude = gen.uniform(0.0, magnitude)
        elif self.magnitude_std > 0:
            magnitude = gen.normal(magnitude, self.magnitude_std)
        return min(self.magnitude_max, max(0.0, magnitude))

    def choose_ops(self, gen: np.random.Generator) -> list:
        """The op names drawn for one image (before the per-op probability)."""
        idx = gen.choice(len(self.ops), self.num_ops, replace=self.choice_weights is None,
                         p=self.choice_weights)
        return [self.ops[i] for i in idx]

    def __call__(self, img: Union[Image.Image, np.ndarray]) -> Union[Image.Image, np.ndarray]:
        as_array = isinstance(img, np.ndarray)
        pil = Image.fromarray(img) if as_array else img
        if pil.mode != "RGB":
            raise ValueError(f"RandAugment expects an RGB image, got mode {pil.mode!r}")
        gen = self.rng.gen
        for name in self.choose_ops(gen):
            if self.prob < 1.0 and gen.random() > self.prob:
                continue
            args = level_to_arg(name, self.sample_magnitude(gen), gen, self.translate_pct)
            resample = resample_filter(self.interpolation, gen) if name in _GEOMETRIC else Image.Resampling.NEAREST
            pil = apply_op(pil, name, args, fill=self.fill, resample=resample)
        return np.asarray(pil) if as_array else pil

    def __repr__(self) -> str:
        return (f"RandAugment(magnitude={self.magnitude}, num_ops={self.num_ops}, "
                f"magnitude_std={self.magnitude_std}, magnitude_max={self.magnitude_max}, "
                f"increasing={self.increasing}, weighted={self.choice_weights is not None}, "
                f"interpolation={self.interpolation!r}, fill={self.fill})")
