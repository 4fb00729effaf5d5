"""Seeded, physics-grounded synthetic data for the edge models (numpy only, no TensorFlow).

Each generator returns inputs in the model's *preprocessed* float form plus labels or targets,
so training, tests and benchmarks all draw from one definition.
"""
