"""Typed error of the hardware-profile package (one line: the problem and the fix)."""

from supernet.errors import ElastiqError


class ProfileError(ElastiqError):
    """A hardware profile is malformed, asks for what its runtime cannot do, or cannot be measured here."""
