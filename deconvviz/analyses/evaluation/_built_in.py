"""Imports every built-in metric module, so that each registers its metrics."""
from . import (  # noqa: F401
    complexity,
    confidence,
    faithfulness,
    irof,
    localisation,
    randomisation,
    road,
    robustness,
)
