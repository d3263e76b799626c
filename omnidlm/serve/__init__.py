"""An OpenAI-compatible HTTP server over the batched engine (FastAPI + uvicorn)."""
