"""Models: loading, the tiny test model, the M-DPO loss and trainers."""
