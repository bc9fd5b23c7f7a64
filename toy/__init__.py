"""The toy judge and its task: a tiny Llama-style model with a locally trained tokenizer, and the seeded
synthetic judging task it learns; what the demo, the studies and the tests run on without a network."""
