"""IMDB reviews as padded integer sequences: sources, encoding, cache, and the DataModule."""

from .datamodule import IMDBDataModule

__all__ = ["IMDBDataModule"]
