#!/usr/bin/env python
"""Runs src/imdb_torch/cli/test.py: see `python scripts/test.py --help`."""

import sys
from pathlib import Path

# Lets a fresh clone run the script before `pip install -e .`; an installed package is the same.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from imdb_torch.cli import launch  # noqa: E402

if __name__ == "__main__":
    sys.exit(launch("test"))
