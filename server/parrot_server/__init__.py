"""Parrot ServeCore and the embedded engine (imported as ``parrot_server``)."""
