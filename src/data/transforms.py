"""Per-image train/eval transforms with timm 0.3.2 semantics, as a list for ``dataset.map(input_columns="image")``.

Input: the encoded bytes of an image file (``dataset.py`` reads them).  Output: float32 CHW.

Training (timm ``transforms_imagenet_train``), one fused Python op::

    decode (PIL, .convert("RGB")) -> RandomResizedCrop ('random' = bilinear or bicubic per image)
    -> horizontal flip -> RandAugment | ColorJitter -> /255, (x - mean) / std, HWC->CHW
    -> RandomErasing

Evaluation (timm ``transforms_imagenet_eval``), one fused Python op::

    decode (PIL, as in training) -> resize the shorter side to floor(S / crop_pct) (PIL bicubic,
    antialiased) -> centre crop S with torchvision's offsets -> /255, (x - mean) / std, HWC->CHW

Everything is Python/PIL, one fused op per image: MindSpore's C++ decode, resize and crop differ from timm
or fail on damaged files (measured: docs/data_pipeline.md).

Decoding (``DecodeImage``): ``Image.open(...).convert("RGB")`` like timm's loader, except
16-bit grey PNGs (modes ``I;16*`` / ``I``), whose samples are scaled to 8 bits by their high
byte as PIL already does for 16-bit RGB PNGs (a plain ``convert`` clips them, turning the image
black and white).  Grey, palette, RGBA (alpha dropped, as timm) and CMYK go through
``convert("RGB")``.  A file PIL cannot decode completely (truncated, damaged, not an image)
raises ``UndecodableImage`` with the reason; PIL's ``LOAD_TRUNCATED_IMAGES`` stays off, so a
truncated file is never decoded grey-filled.  Images with more than ``max_pixels`` pixels
(default: Pillow's own decompression-bomb limit) are refused before their pixels are decoded,
with a message saying how to allow them; the check replaces Pillow's process-wide
``Image.MAX_IMAGE_PIXELS`` guard, which is switched off in processes that use this decoder.

Randomness: every random step owns a ``ProcessLocalRNG`` seeded from ``seed`` (``None`` =
fresh entropy) and the worker index, so worker processes never share a stream.
"""
from __future__ import annotations

import io
import math
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
from PIL import Image, ImageEnhance

from .params import DEFAULT_MAX_IMAGE_PIXELS, EvalTransformParams, TrainTransformParams
from .rand_augment import INTERPOLATIONS, RandAugment, parse_rand_augment, resample_filter
from .random_erasing import RandomErasing
from .rng import ProcessLocalRNG, derive_seed

__all__ = [
    "create_transforms", "DecodeImage", "UndecodableImage", "ResizeShorter",
    "RandomResizedCrop", "RandomHorizontalFlip", "ColorJitter",
    "Normalize", "CenterCrop", "PythonChain", "eval_resize_size", "center_crop_offsets",
]

ImageLike = Union[Image.Image, np.ndarray]


def _to_pil(img: ImageLike) -> Image.Image:
    if isinstance(img, Image.Image):
        return img
    return Image.fromarray(np.asarray(img))


def _sub_seed(seed: Optional[int], name: str) -> Optional[int]:
    return None if seed is None else derive_seed(seed, name)


_SIXTEEN_BIT_GREY = ("I;16", "I;16L", "I;16B", "I;16N", "I")


class UndecodableImage(ValueError):
    """The bytes are not an image PIL can decode completely (the message says why)."""


def to_rgb(img: Image.Image) -> Image.Image:
    """An opened image as 8-bit RGB; 16-bit grey keeps its high byte (``convert`` would clip it)."""
    if img.mode in _SIXTEEN_BIT_GREY:
        high = np.right_shift(np.clip(np.asarray(img), 0, 65535).astype(np.uint16), 8).astype(np.uint8)
        img = Image.fromarray(high)
    return img.convert("RGB")


class DecodeImage:
    """Encoded bytes -> RGB PIL image, as timm's loader (``Image.open(f).convert("RGB")``).

    Raises ``UndecodableImage`` for anything that is not a complete image, and for images of
    more than ``max_pixels`` pixels (checked from the header, before decoding).
    """

    def __init__(self, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> None:
        if int(max_pixels) != max_pixels or max_pixels < 1:
            raise ValueError(f"max_pixels must be a positive int, got {max_pixels!r}")
        self.max_pixels = int(max_pixels)

    def __call__(self, data: Union[bytes, np.ndarray]) -> Image.Image:
        buffer = data.tobytes() if isinstance(data, np.ndarray) else bytes(data)
        Image.MAX_IMAGE_PIXELS = None  # the exact check below replaces Pillow's (which refuses at twice its value)
        try:
            with Image.open(io.BytesIO(buffer)) as img:
                pixels = img.width * img.height
                if pixels > self.max_pixels:
                    raise UndecodableImage(
                        f"a {img.width}x{img.height} {img.format} image of {pixels:,} pixels, more than the limit of "
                        f"{self.max_pixels:,} (Pillow's guard against decompression bombs); if it is genuine, allow it "
                        f"with max_image_pixels {pixels} or more")
                return to_rgb(img)
        except UndecodableImage:
            raise
        except Exception as err:  # PIL raises several types; say what failed, keep the cause
            raise UndecodableImage(f"not a decodable image ({len(buffer)} bytes; {type(err).__name__}: {err})") from err


class RandomResizedCrop:
    """timm ``RandomResizedCropAndInterpolation`` on PIL: 10 tries, log-uniform ratio, centre fallback."""

    def __init__(self, size: int, *, scale: Sequence[float] = (0.08, 1.0),
                 ratio: Sequence[float] = (3 / 4, 4 / 3), interpolation: str = "bicubic",
                 seed: Optional[int] = None) -> None:
        if not 0 < scale[0] <= scale[1]:
            raise ValueError(f"scale must be (min, max) with 0 < min <= max, got {scale}")
        if not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"ratio must be (min, max) with 0 < min <= max, got {ratio}")
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
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
        resample = resample_filter(self.interpolation, gen)
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


class ResizeShorter:
    """Shorter side to ``size`` with PIL's antialiased bicubic, long side ``int(size * long / short)`` (torchvision).

    Two passes, width first: the order classic Pillow and MindSpore's ``Inter.PILCUBIC`` use.
    Pillow 13 resizes images taller than wide height first, which differs by up to ~20 grey
    levels on noisy images; fixing the order keeps evaluation results as they were.
    """

    def __init__(self, size: int) -> None:
        self.size = int(size)

    def __call__(self, img: ImageLike) -> Image.Image:
        pil = _to_pil(img)
        width, height = pil.size
        if width <= height:
            new_width, new_height = self.size, int(self.size * height / width)
        else:
            new_width, new_height = int(self.size * width / height), self.size
        if new_width != width:
            pil = pil.resize((new_width, height), Image.Resampling.BICUBIC)
        if new_height != height:
            pil = pil.resize((new_width, new_height), Image.Resampling.BICUBIC)
        return pil


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


def create_transforms(transform: EvalTransformParams, augment: Optional[TrainTransformParams] = None, *,
                      seed: Optional[int] = None, max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> List[Any]:
    """The map operations turning encoded image bytes into a float32 CHW image: the evaluation
    ``transform``, or with ``augment`` the training one (``transform``'s image_size, mean and std).

    ``augment.interpolation`` is the *training* interpolation (timm's ``train_interpolation``) of the
    crop and of RandAugment's geometric ops; 'random' draws bilinear or bicubic per call.
    Evaluation always resizes with bicubic, the ViG models' ``default_cfg``, whatever it says.
    ``seed`` seeds the random steps (``None``: fresh entropy per process).  ``max_image_pixels``:
    larger images are refused by the decoder (``UndecodableImage``).
    """
    image_size = transform.image_size
    if int(image_size) != image_size or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    image_size = int(image_size)
    normalize = Normalize(transform.mean, transform.std)
    if augment is None:
        resize = ResizeShorter(eval_resize_size(image_size, transform.crop_pct))
        return [PythonChain([DecodeImage(max_image_pixels), resize, CenterCrop(image_size), normalize])]

    steps: List[Callable[[Any], Any]] = [
        RandomResizedCrop(image_size, scale=augment.crop_scale, ratio=augment.crop_ratio,
                          interpolation=augment.interpolation, seed=_sub_seed(seed, "crop"))]
    if augment.hflip > 0:
        steps.append(RandomHorizontalFlip(augment.hflip, seed=_sub_seed(seed, "flip")))
    if augment.auto_augment:
        if not augment.auto_augment.startswith("rand"):
            raise ValueError(f"only RandAugment strings ('rand-...') are supported, got {augment.auto_augment!r}")
        fill = tuple(min(255, round(255 * m)) for m in transform.mean)
        steps.append(RandAugment(**parse_rand_augment(augment.auto_augment), fill=fill, translate_pct=0.45,
                                 interpolation=augment.interpolation, seed=_sub_seed(seed, "rand_augment")))
    elif augment.color_jitter and augment.color_jitter > 0:
        jitter = augment.color_jitter
        steps.append(ColorJitter(jitter, jitter, jitter, seed=_sub_seed(seed, "jitter")))
    steps.append(normalize)
    if augment.re_prob > 0:
        steps.append(RandomErasing(probability=augment.re_prob, mode=augment.re_mode, max_count=augment.re_count,
                                   seed=_sub_seed(seed, "erasing")))
    return [PythonChain([DecodeImage(max_image_pixels)] + steps)]
