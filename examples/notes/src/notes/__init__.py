"""notes: a small FastAPI app on PostgreSQL, the kit's example of a real app."""
