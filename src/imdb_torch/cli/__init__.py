"""Command-line tools; ``scripts/*.py`` are thin wrappers around these ``main`` functions."""

import sys
import types

# TensorBoard writes its event files through TensorFlow whenever TensorFlow is installed (the
# tfds extra brings it), and importing TensorFlow costs each program seconds of start-up and
# a screen of TensorFlow's log lines. Without TensorFlow it writes the same files through its
# own stand-in; a module named ``tensorboard.compat.notf`` is TensorBoard's switch to that
# stand-in (tensorboard/compat/__init__.py). Set before anything imports TensorBoard.
sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))
