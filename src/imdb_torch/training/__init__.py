"""Training: the LightningModule (``module.py``), Keras's ``fit`` as a Trainer (``trainer.py``),
the callbacks Lightning lacks, and checkpoints read without trusting them."""
