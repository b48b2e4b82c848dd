"""Test stand-in for ModelArts' moxing: object-store URLs are folders under $MOXING_STUB_ROOT."""
from . import file  # noqa: F401
