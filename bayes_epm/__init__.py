"""bayes-epm: Bayesian scaling laws for compressed language models.

The effective parameter multiplier (EPM) of a compression format: a model of N parameters in
that format trains to the loss of a dense model of EPM * N parameters.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bayes-epm")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
