"""The network (``network.py``), what keeps it faithful to Keras (``keras_compat.py``), and
its fast CPU path (``fused_rnn.py``)."""

from .network import SentimentNet

__all__ = ["SentimentNet"]
