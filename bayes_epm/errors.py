"""The project's exception types.

Two families, so that callers can tell a user's mistake from a failure at run time:

- :class:`InvalidInputError` (a ``ValueError``): the input was wrong. The message says what was
  wrong and what is valid. The CLI turns it into exit status 2 and one line on stderr; nothing
  has been written or started when it is raised.
- :class:`RunFailure` (a ``RuntimeError``): valid input, but the work could not be done
  (a training run crashed, a worker died). These are recorded, never silently dropped.
"""

from __future__ import annotations


class BayesEpmError(Exception):
    """Base class of every error raised on purpose by bayes-epm."""


class InvalidInputError(BayesEpmError, ValueError):
    """Bad input: the message says what was wrong and what is valid."""


class FormatError(InvalidInputError):
    """A compression format name or spec that is not valid."""


class SpecError(InvalidInputError):
    """A training-run spec with a value out of range or of the wrong kind."""


class DataError(InvalidInputError):
    """A token-data source that cannot be read or is unusable (too short, wrong dtype)."""


class CompressionError(InvalidInputError):
    """A format that cannot be applied to a given model (e.g. N:M groups that do not divide a layer)."""


class NotFittedError(InvalidInputError):
    """A query on a fit that does not exist (yet): a missing fit directory, a study before its first fit."""


class RunFailure(BayesEpmError, RuntimeError):
    """Valid input, but the work failed at run time."""


class TrainingFailed(RunFailure):
    """A training run that ended with status ``failed``; carries the run's result."""

    def __init__(self, message: str, result: object | None = None) -> None:
        super().__init__(message)
        self.result = result
