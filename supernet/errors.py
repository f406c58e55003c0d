"""Typed errors for bad input.

Every message is one line that names the problem and the fix, so that the CLI can print it as is
(exit code 2) and library users can catch one base class.
"""


class ElastiqError(Exception):
    """Base class of every error elastiq raises on bad input."""


class CheckpointError(ElastiqError):
    """A checkpoint folder is missing, incomplete, or not a BERT-family model."""


class DataError(ElastiqError):
    """A dataset file or its columns cannot be used for text classification."""


class ArchError(ElastiqError):
    """An architecture does not belong to the super-network's elastic space."""


class ConfigError(ElastiqError):
    """A configuration value is missing, unknown or out of range."""
