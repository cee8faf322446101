"""The online side of genrec: FastAPI app, settings, Redis cache and history, recommend logic, precompute.

Imports ``model`` (the shared contract) and never ``training``.
"""
