"""Which image files a split holds, and what happens to the ones that cannot be read.

One scan serves counting and reading alike (``create_dataset``, offline preprocessing, the
digits writer): class folders are the visible sub-folders of ``<root>/<split>`` sorted by
name (index = label), images are the visible files with an image extension (any letter
case) sorted by name.  Hidden entries (names starting with ``.``: ``.ipynb_checkpoints``,
``.DS_Store``, macOS ``._x.jpg`` resource forks) are ignored everywhere.

Bad images, one policy for training, evaluation and preprocessing: a file that cannot be
read or decoded is skipped, named once in a warning with the reason, and counted; a summary
follows each pass.  When more than ``max_bad_image_fraction`` of the files are bad the run
stops with one error: a few bad files in a million never stop a run, a broken dataset never
trains quietly.  Nothing is decoded up front (that would cost a full pass over the data);
files are judged when the pipeline reads them.
"""
from __future__ import annotations

import logging
import math
import os
from typing import Callable, Iterable, List, Optional

import numpy as np

from .errors import DatasetError

__all__ = ["SPLITS", "IMAGE_EXTENSIONS", "visible", "split_dir", "class_names", "ImageFiles",
           "BadImagePolicy", "BadImagesError"]

logger = logging.getLogger(__name__)

SPLITS = ("train", "val")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
LAYOUT = "expected the ImageNet layout <root>/train/<class>/<image> and <root>/val/<class>/<image>"


def visible(name: str) -> bool:
    """False for hidden entries, which no part of the project reads or counts."""
    return not name.startswith(".")


def split_dir(root: str, split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not os.path.isdir(root):
        raise FileNotFoundError(f"dataset root {root!r} does not exist or is not a directory; {LAYOUT} "
                                "(for the demo, write one with src.data.digits.write_digits_dataset)")
    path = os.path.join(root, split)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"split folder {path!r} does not exist; {LAYOUT}")
    return path


def class_names(root: str, split: str) -> List[str]:
    """Sorted visible class folder names of a split; index = label."""
    path = split_dir(root, split)
    names = sorted(e.name for e in os.scandir(path) if e.is_dir() and visible(e.name))
    if not names:
        raise DatasetError(f"split folder {path!r} has no class folders; {LAYOUT}")
    return names


class ImageFiles:
    """The images of one split: ``path(i)`` and ``labels[i]``, ordered by class, then file name.

    Paths are kept as one fixed-width byte array (relative to the split folder), so a million
    files cost tens of MB that forked workers share instead of copying.  A class folder
    without images is named in a warning: that class would never be seen.
    """

    def __init__(self, root: str, split: str, names: Optional[List[str]] = None) -> None:
        self.folder = split_dir(root, split)
        self.classes = list(names) if names is not None else class_names(root, split)
        relative: List[str] = []
        labels: List[int] = []
        for label, name in enumerate(self.classes):
            class_dir = os.path.join(self.folder, name)
            files = sorted(e.name for e in os.scandir(class_dir) if visible(e.name) and e.is_file()
                           and e.name.lower().endswith(IMAGE_EXTENSIONS))
            if not files:
                logger.warning("class folder %s has no images (%s): class %r is never seen in %s", class_dir,
                               "/".join(IMAGE_EXTENSIONS), name, split)
            relative.extend(f"{name}/{file}" for file in files)
            labels.extend([label] * len(files))
        self._relative = np.array([r.encode("utf-8", "surrogateescape") for r in relative], dtype=bytes)
        self.labels = np.array(labels, np.int32)

    def __len__(self) -> int:
        return len(self.labels)

    def relative(self, index: int) -> str:
        """``<class>/<file>`` of image ``index``."""
        return bytes(self._relative[index]).decode("utf-8", "surrogateescape")

    def path(self, index: int) -> str:
        return os.path.join(self.folder, self.relative(index))

    def read(self, index: int) -> bytes:
        with open(self.path(index), "rb") as handle:
            return handle.read()


class BadImagesError(DatasetError):
    """More of a split's images are unreadable than ``max_bad_image_fraction`` allows."""


# Files already named in a warning by this process: a long run names each bad file once, not every epoch.
_REPORTED: set = set()


class BadImagePolicy:
    """Names, counts and limits the unreadable images of one pass over ``files``.

    ``expected`` is the number of distinct files the pass reads (a shard's share in distributed
    runs); at most ``floor(max_fraction * expected)`` of them may be bad.  ``explain(i)`` gives
    the reason file ``i`` failed (the decoder's message), for the warning.
    """

    def __init__(self, files: ImageFiles, max_fraction: float, explain: Callable[[int], str],
                 expected: Optional[int] = None) -> None:
        if not 0.0 <= max_fraction <= 1.0:
            raise ValueError(f"max_bad_image_fraction must be in [0, 1], got {max_fraction}")
        self.files = files
        self.max_fraction = float(max_fraction)
        self.explain = explain
        self.expected = len(files) if expected is None else int(expected)
        self.allowed = math.floor(self.max_fraction * self.expected + 1e-9)
        self.bad: List[int] = []
        self._seen: set = set()

    def add(self, indices: Iterable[int]) -> None:
        """Record bad files (repeats are ignored); stop when there are more than allowed."""
        for index in indices:
            index = int(index)
            if index < 0 or index in self._seen:
                continue
            self._seen.add(index)
            self.bad.append(index)
            path = self.files.path(index)
            if path not in _REPORTED:
                _REPORTED.add(path)
                logger.warning("skipping image %s: %s", path, self.explain(index))
        if len(self.bad) > self.allowed:
            names = ", ".join(repr(self.files.path(i)) for i in self.bad[:3])
            raise BadImagesError(
                f"{len(self.bad)} of {self.expected} images in {self.files.folder!r} cannot be read "
                f"({100.0 * len(self.bad) / max(self.expected, 1):.2g}%), more than max_bad_image_fraction "
                f"{self.max_fraction:g} allows ({self.allowed}): {names}{', ...' if len(self.bad) > 3 else ''}; "
                "replace or remove them (each is named in a warning with the reason), or raise "
                "max_bad_image_fraction")

    def summary(self) -> None:
        """One warning with the count at the end of a pass that skipped images."""
        if self.bad:
            logger.warning("skipped %d unreadable image%s of %d in %s (named above)", len(self.bad),
                           "s" if len(self.bad) > 1 else "", self.expected, self.files.folder)
