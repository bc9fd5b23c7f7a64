"""Shared plumbing: configuration, JSONL I/O, logging and seeding."""
