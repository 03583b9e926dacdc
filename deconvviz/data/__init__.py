"""Data: the model zoo (models, weights, layer aliases) and loading photos."""
