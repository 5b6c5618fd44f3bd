"""The package's one user-facing exception type."""


class VideoCoopError(ValueError):
    """A user error: bad input, a missing file, an impossible configuration.

    The message names the bad value and the valid options; the CLI prints it without a
    traceback and exits with a usage error.
    """
