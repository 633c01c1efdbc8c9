"""Errors raised by the data layer."""


class DatasetError(ValueError):
    """A dataset on disk is missing or malformed.

    The message is ONE line that names the offending path first, then what is wrong, e.g.
    ``/data/imagenet: no 'val' folder (expected train/<class>/*.JPEG and val/<class>/*.JPEG)``.
    """


class BadImageError(DatasetError):
    """An image file that cannot be decoded; the message is one line naming the file and the reason."""
