"""Inference that rebuilds the model from a run's manifest alone."""
