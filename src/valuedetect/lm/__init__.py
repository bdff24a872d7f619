"""The one language-model layer: typed requests, one abstract ``LM`` (``loglikelihood``,
``generate_until``), one file per backend, a registry by name and the response cache as a
wrapper. Importing it imports neither torch nor any backend library."""

from valuedetect.lm.api import (
    LM,
    Budget,
    BudgetExhausted,
    GenerateRequest,
    Generation,
    LoglikelihoodRequest,
    Usage,
    probability_of,
)
from valuedetect.lm.registry import BACKENDS, make_lm

__all__ = ["BACKENDS", "LM", "Budget", "BudgetExhausted", "GenerateRequest", "Generation", "LoglikelihoodRequest",
           "Usage", "make_lm", "probability_of"]
