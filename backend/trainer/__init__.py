"""The real CPU trainer of the embedded backend: built-in base models, training loop, generation."""
