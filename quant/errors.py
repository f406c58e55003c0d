"""Typed errors of the quantization package.

They subclass ``supernet.errors.ElastiqError`` so that the CLI prints them as one line (exit code 2)
and library users can catch one base class for every bad-input error elastiq raises.
"""

from supernet.errors import ElastiqError


class PrecisionError(ElastiqError):
    """A precision is unknown, cannot run on this machine, or cannot take a given layer."""


class PolicyError(ElastiqError):
    """A quantization policy names unknown layers or precisions, or its JSON is malformed."""
