"""Wire schema shared by the client SDK and the server (one copy, pydantic v2)."""
