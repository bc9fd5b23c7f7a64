"""Sampling judgments, parsing verdicts, perplexity scoring, levels and pairs (refined or from labels), and the judge as a product (API, RL reward)."""
