"""Analyses: each reads the case, names its SQL steps (printable), and returns frames or dataclasses."""
