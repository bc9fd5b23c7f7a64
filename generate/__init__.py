"""Stage 2 machinery: sampling judgments, parsing verdicts, perplexity scoring, levels and pairs."""
