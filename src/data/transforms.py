"""Per-image train/eval transforms with timm 0.3.2 semantics, as a list for ``dataset.map(input_columns="image")``.

Input: encoded image bytes from ``ImageFolderDataset(decode=False)``.  Output: float32 CHW.

Training (timm ``transforms_imagenet_train``), one fused Python op::

    decode (PIL, .convert("RGB")) -> RandomResizedCrop ('random' = bilinear or bicubic per image)
    -> horizontal flip -> RandAugment | ColorJitter -> /255, (x - mean) / std, HWC->CHW
    -> RandomErasing

Evaluation (timm ``transforms_imagenet_eval``)::

    vision.Decode (C++) -> vision.Resize(floor(S / crop_pct), Inter.PILCUBIC) (C++, shorter side)
    -> Python [ centre crop S with torchvision's offsets -> /255, (x - mean) / std, HWC->CHW ]

Which op is C++ and which is Python, and why (measured on MindSpore 2.10, Pillow 13, 2 CPUs):

* ``vision.Decode`` gives the same pixels as PIL's ``Image.open(...).convert("RGB")`` for
  RGB/grey/CMYK JPEG, RGB/RGBA/grey/palette PNG and BMP; it cannot read GIF or WEBP, 16-bit PNGs
  come out differently, and a JPEG that libjpeg rejects (e.g. truncated) or an unsupported
  format makes it write the bytes to ``./abnormal_image.jpg`` / ``./unsupported_image.<ext>``
  in the working directory (hard-coded) before raising.
* ``vision.Resize(..., Inter.PILCUBIC)`` equals PIL's antialiased bicubic resize bit for bit
  and sizes the long side ``int(S * long / short)`` like torchvision (``Inter.BICUBIC`` is
  OpenCV's and differs by up to 40+ grey levels when downscaling).  No C++ op matches PIL's
  antialiased *bilinear* resize, which timm's 'random' train interpolation needs.
* ``vision.CenterCrop`` puts the offset at ``floor((H - S) / 2)``; torchvision uses Python's
  ``round`` (half to even), one pixel further for some odd margins, so the crop is Python.
* Training decodes with PIL inside the worker: the whole chain is Python anyway (random ops
  must draw from this package's per-process generators, see ``rng.py``; MindSpore's C++ random
  ops draw from their own engine, seeded only through the global ``ds.config.set_seed``), and
  shipping the compressed bytes to the worker instead of the decoded image was faster
  (about 10-20% less CPU per image on 500x375 JPEGs) and writes no dump files.
* Consecutive Python steps are fused (``PythonChain``) so that an image crosses the process
  boundary once.

Decode errors are raised with the exception text of PIL or MindSpore; when the op runs inside
``dataset.map`` MindSpore prefixes ``The corresponding data file is: <path>``.

Randomness: every random step owns a ``ProcessLocalRNG`` seeded from ``seed`` (``None`` =
fresh entropy) and the worker index, so worker processes never share a stream.
"""
from __future__ import annotations

import io
import math
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageEnhance

import mindspore.dataset.vision as vision
from mindspore.dataset.vision import Inter

from .rand_augment import RandAugment, parse_rand_augment
from .random_erasing import RandomErasing
from .rng import ProcessLocalRNG, derive_seed

__all__ = [
    "create_transforms", "DecodeImage", "RandomResizedCrop", "RandomHorizontalFlip", "ColorJitter",
    "Normalize", "CenterCrop", "PythonChain", "eval_resize_size", "center_crop_offsets",
]

_PIL_INTERP = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
TRAIN_INTERPOLATIONS = ("bicubic", "bilinear", "random")  # 'random': bilinear or bicubic per image
ImageLike = Union[Image.Image, np.ndarray]


def _to_pil(img: ImageLike) -> Image.Image:
    if isinstance(img, Image.Image):
        return img
    return Image.fromarray(np.asarray(img))


def _sub_seed(seed: Optional[int], name: str) -> Optional[int]:
    return None if seed is None else derive_seed(seed, name)


class DecodeImage:
    """Encoded bytes -> RGB PIL image, as timm's loader (``Image.open(f).convert("RGB")``)."""

    def __call__(self, data: Union[bytes, np.ndarray]) -> Image.Image:
        buffer = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
        try:
            with Image.open(io.BytesIO(buffer)) as img:
                return img.convert("RGB")
        except Exception as err:  # PIL raises several types; say what failed, keep the cause
            raise ValueError(f"cannot decode image ({len(buffer)} bytes): {type(err).__name__}: {err}") from err


class RandomResizedCrop:
    """timm ``RandomResizedCropAndInterpolation`` on PIL: 10 tries, log-uniform ratio, centre fallback."""

    def __init__(self, size: int, *, scale: Sequence[float] = (0.08, 1.0),
                 ratio: Sequence[float] = (3 / 4, 4 / 3), interpolation: str = "bicubic",
                 seed: Optional[int] = None) -> None:
        if not 0 < scale[0] <= scale[1]:
            raise ValueError(f"scale must be (min, max) with 0 < min <= max, got {scale}")
        if not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"ratio must be (min, max) with 0 < min <= max, got {ratio}")
        if interpolation != "random" and interpolation not in _PIL_INTERP:
            raise ValueError(f"interpolation must be 'bilinear', 'bicubic' or 'random', got {interpolation!r}")
        self.size = (int(size), int(size))
        self.scale = (float(scale[0]), float(scale[1]))
        self.ratio = (float(ratio[0]), float(ratio[1]))
        self.interpolation = interpolation
        self.rng = ProcessLocalRNG(seed, "random_resized_crop")

    def get_params(self, width: int, height: int, gen: np.random.Generator) -> Tuple[int, int, int, int]:
        """The crop box (top, left, h, w) for an image of the given size."""
        area = width * height
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target_area = gen.uniform(*self.scale) * area
            aspect = math.exp(gen.uniform(*log_ratio))
            w = int(round(math.sqrt(target_area * aspect)))
            h = int(round(math.sqrt(target_area / aspect)))
            if w <= width and h <= height:
                top = int(gen.integers(0, height - h + 1))
                left = int(gen.integers(0, width - w + 1))
                return top, left, h, w
        in_ratio = width / height
        if in_ratio < min(self.ratio):
            w = width
            h = int(round(w / min(self.ratio)))
        elif in_ratio > max(self.ratio):
            h = height
            w = int(round(h * max(self.ratio)))
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w

    def __call__(self, img: ImageLike) -> Image.Image:
        pil = _to_pil(img)
        gen = self.rng.gen
        top, left, h, w = self.get_params(pil.width, pil.height, gen)
        if self.interpolation == "random":
            resample = (Image.Resampling.BILINEAR, Image.Resampling.BICUBIC)[int(gen.integers(2))]
        else:
            resample = _PIL_INTERP[self.interpolation]
        # crop, then resize the crop (torchvision's resized_crop); resize(box=...) would let the
        # filter read pixels outside the box and differ at the borders
        return pil.crop((left, top, left + w, top + h)).resize(self.size, resample)


class RandomHorizontalFlip:
    """Mirror left-right with probability ``p``."""

    def __init__(self, p: float = 0.5, *, seed: Optional[int] = None) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"flip probability must be in [0, 1], got {p}")
        self.p = float(p)
        self.rng = ProcessLocalRNG(seed, "horizontal_flip")

    def __call__(self, img: ImageLike) -> Image.Image:
        pil = _to_pil(img)
        if self.rng.gen.random() < self.p:
            return pil.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return pil


class ColorJitter:
    """torchvision ColorJitter(b, c, s) on PIL: factors U[max(0, 1-v), 1+v], applied in random order."""

    def __init__(self, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4, *,
                 seed: Optional[int] = None) -> None:
        for name, value in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
            if value < 0:
                raise ValueError(f"color jitter {name} must be >= 0, got {value}")
        self.factors = [(ImageEnhance.Brightness, float(brightness)),
                        (ImageEnhance.Contrast, float(contrast)),
                        (ImageEnhance.Color, float(saturation))]
        self.rng = ProcessLocalRNG(seed, "color_jitter")

    def __call__(self, img: ImageLike) -> Image.Image:
        pil = _to_pil(img)
        gen = self.rng.gen
        for k in gen.permutation(len(self.factors)):
            enhancer, value = self.factors[k]
            if value > 0:
                pil = enhancer(pil).enhance(gen.uniform(max(0.0, 1.0 - value), 1.0 + value))
        return pil


class Normalize:
    """HWC uint8 (PIL or array) -> float32 CHW ``(x / 255 - mean) / std`` (ToTensor + Normalize)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ValueError(f"mean and std need 3 values each, std > 0; got {mean}, {std}")
        self.mean = np.asarray(mean, dtype=np.float32).reshape(3, 1, 1)
        self.std = np.asarray(std, dtype=np.float32).reshape(3, 1, 1)

    def __call__(self, img: ImageLike) -> np.ndarray:
        arr = np.asarray(img)
        if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
            raise ValueError(f"Normalize expects an HWC uint8 RGB image, got {arr.dtype} {arr.shape}")
        chw = arr.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)
        return np.ascontiguousarray((chw - self.mean) / self.std)


def center_crop_offsets(height: int, width: int, size: int) -> Tuple[int, int]:
    """torchvision's centre-crop offsets: ``int(round((H - S) / 2))`` (round half to even)."""
    return int(round((height - size) / 2.0)), int(round((width - size) / 2.0))


class CenterCrop:
    """Centre crop of an HWC array with torchvision's offsets (pads nothing: the image must be large enough)."""

    def __init__(self, size: int) -> None:
        self.size = int(size)

    def __call__(self, img: ImageLike) -> np.ndarray:
        arr = np.asarray(img)
        height, width = arr.shape[:2]
        if height < self.size or width < self.size:
            raise ValueError(f"CenterCrop({self.size}) got a smaller image {height}x{width}")
        top, left = center_crop_offsets(height, width, self.size)
        return arr[top:top + self.size, left:left + self.size]


class PythonChain:
    """Several Python steps as one callable, so an image crosses into a worker process once."""

    def __init__(self, steps: Sequence[Callable[[Any], Any]]) -> None:
        self.steps = list(steps)

    def __call__(self, img: Any) -> Any:
        for step in self.steps:
            img = step(img)
        return img

    def __repr__(self) -> str:
        return "PythonChain(" + ", ".join(type(s).__name__ for s in self.steps) + ")"


def eval_resize_size(image_size: int, crop_pct: float) -> int:
    """timm's eval resize: shorter side to ``floor(image_size / crop_pct)``."""
    if not 0 < crop_pct <= 1:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
    return int(math.floor(image_size / crop_pct))


def create_transforms(is_training: bool, image_size: int, *, interpolation: str = "bicubic",
                      auto_augment: Optional[str] = "rand-m9-mstd0.5-inc1", color_jitter: float = 0.4,
                      re_prob: float = 0.25, re_mode: str = "pixel", re_count: int = 1,
                      mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.5, 0.5, 0.5),
                      crop_pct: float = 0.9, scale: Sequence[float] = (0.08, 1.0),
                      ratio: Sequence[float] = (3 / 4, 4 / 3), hflip: float = 0.5,
                      seed: Optional[int] = None) -> List[Any]:
    """The map operations turning encoded image bytes into a float32 CHW image.

    ``interpolation`` is the *training* interpolation (timm's ``train_interpolation``) of the
    crop and of RandAugment's geometric ops; 'random' draws bilinear or bicubic per call.
    Evaluation always resizes with bicubic, the ViG models' ``default_cfg``, whatever it says.
    ``seed`` seeds the random steps (``None``: fresh entropy per process).
    """
    if int(image_size) != image_size or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    image_size = int(image_size)
    if interpolation not in ("bilinear", "bicubic", "random"):
        raise ValueError(f"interpolation must be 'bilinear', 'bicubic' or 'random', got {interpolation!r}")
    normalize = Normalize(mean, std)
    if not is_training:
        return [vision.Decode(),
                vision.Resize(eval_resize_size(image_size, crop_pct), Inter.PILCUBIC),
                PythonChain([CenterCrop(image_size), normalize])]

    steps: List[Callable[[Any], Any]] = [
        RandomResizedCrop(image_size, scale=scale, ratio=ratio, interpolation=interpolation,
                          seed=_sub_seed(seed, "crop"))]
    if hflip > 0:
        steps.append(RandomHorizontalFlip(hflip, seed=_sub_seed(seed, "flip")))
    if auto_augment:
        if not auto_augment.startswith("rand"):
            raise ValueError(f"only RandAugment strings ('rand-...') are supported, got {auto_augment!r}")
        fill = tuple(min(255, round(255 * m)) for m in mean)
        steps.append(RandAugment(**parse_rand_augment(auto_augment), fill=fill, translate_pct=0.45,
                                 interpolation=interpolation, seed=_sub_seed(seed, "rand_augment")))
    elif color_jitter and color_jitter > 0:
        steps.append(ColorJitter(color_jitter, color_jitter, color_jitter, seed=_sub_seed(seed, "jitter")))
    steps.append(normalize)
    if re_prob > 0:
        steps.append(RandomErasing(probability=re_prob, mode=re_mode, max_count=re_count,
                                   seed=_sub_seed(seed, "erasing")))
    return [PythonChain([DecodeImage()] + steps)]
