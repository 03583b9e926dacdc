"""Imports every built-in metric module, so that each registers its metrics."""
