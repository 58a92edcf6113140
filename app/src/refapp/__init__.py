"""The kit's reference FastAPI app."""
