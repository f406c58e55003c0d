"""Typed errors of the search package.

``SearchError`` subclasses ``supernet.errors.ElastiqError``, so that the CLI prints it as one line
(exit code 2) and library users catch one base class; every message names the problem and the fix.
"""

from supernet.errors import ElastiqError


class SearchError(ElastiqError):
    """Bad input to a search: a malformed space or encoding, an evaluation result, a store, a setting."""
