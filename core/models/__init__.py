"""Loading and running models: CLIP embeddings, and the tiny offline builders used by `tiny`."""
