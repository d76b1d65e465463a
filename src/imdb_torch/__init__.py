"""LSTM and GRU sentiment classifiers on IMDB in PyTorch Lightning, faithful to the Keras lesson."""

__version__ = "0.4.0"
