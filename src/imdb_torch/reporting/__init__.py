"""What a run leaves for a person: the loss plot, run histories and test results read back,
reports and comparisons."""
