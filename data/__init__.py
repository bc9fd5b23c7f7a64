"""Data: schemas, judge prompt templates, the synthetic task and converters for public sets."""
