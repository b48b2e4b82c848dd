"""Realistic weights without training, for the tools and tests: the calibration lives in ``src.models.calibrate``
(the Ascend self-test of the library uses it too)."""
from src.models.calibrate import (calibrate, calibration_images, knn_margins, randomize_affine,  # noqa: F401
                                  structured_images)
