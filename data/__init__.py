"""Data: schemas, judge prompt templates, the prompt budget, token conventions and converters for public sets."""
