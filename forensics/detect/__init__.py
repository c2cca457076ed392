"""Anomaly detectors: isolation forests trained on a case's quiet baseline, scored on every request."""
