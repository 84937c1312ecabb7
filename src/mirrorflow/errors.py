"""Errors a user can cause. The CLI prints them as one line and exits with code 2 (no traceback)."""


class MirrorflowError(Exception):
    """Base class: a problem with the user's input, reported as one line."""


class ConfigError(MirrorflowError, ValueError):
    """A bad config key or value (unknown key, wrong type, out of range)."""


class DataError(MirrorflowError):
    """A data file is missing, unreadable, or fails its checksum."""


class ModelError(MirrorflowError):
    """A model name or path that cannot be loaded (e.g. a hub name while offline)."""
