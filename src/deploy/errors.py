"""The deployment steps' user-facing error: an export or offline-inference input that cannot be used."""


class DeployError(ValueError):
    """An export target, exported model or offline-inference folder that cannot be used; names the fix."""
