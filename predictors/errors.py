"""Typed errors of the predictors package.

``PredictorError`` subclasses ``supernet.errors.ElastiqError``, so that the CLI prints it as one line
(exit code 2) and library users catch one base class, and also ``ValueError``, because scikit-learn's
conventions (and its ``check_estimator``) expect bad input to an estimator to raise a ValueError.
"""

from supernet.errors import ElastiqError


class PredictorError(ElastiqError, ValueError):
    """Bad input to a predictor: unusable features or targets, an unknown model family, too few rows."""
