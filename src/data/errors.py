"""The data pipeline's user-facing error: a dataset, image or data setting that cannot be used as given."""


class DatasetError(ValueError):
    """A dataset folder, image file or data setting that cannot be used; the message names the fix."""
