"""Data files shipped with the package (Olivetti faces, tiny_shakespeare), verified by sha256 on load."""

from ..errors import DataError
from .datasets import (
    OLIVETTI,
    TINY_SHAKESPEARE,
    DataFile,
    load_olivetti,
    load_tinyshakespeare,
    sha256_of,
    verified_path,
)

__all__ = [
    "DataError",
    "DataFile",
    "OLIVETTI",
    "TINY_SHAKESPEARE",
    "load_olivetti",
    "load_tinyshakespeare",
    "sha256_of",
    "verified_path",
]
