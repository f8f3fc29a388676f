"""HTTP surface of the server: thin FastAPI routers over service classes."""
