"""Sampling judgments, parsing verdicts, perplexity scoring, refinement's levels and pairs (or pairs
from labels), and the judge as a product (API, RL reward)."""
