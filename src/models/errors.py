"""The models' user-facing error: a model name or build argument that cannot be used as given."""


class ModelError(ValueError):
    """An unknown model name or an argument the model cannot be built with; the message names the fix."""
