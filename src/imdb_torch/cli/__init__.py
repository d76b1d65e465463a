"""Command-line tools; ``scripts/*.py`` are thin wrappers around these ``main`` functions."""
