"""Models: loading (checkpoints and GGUF files), log-probs, the M-DPO loss and the trainers."""
