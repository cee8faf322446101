"""Local tooling, not part of a deployment: the embedded Redis and the demo's process supervisor.

``redis_server``: a throwaway redis-server subprocess (tests, ``genrec serve`` without
REDIS_URL). ``redis_cluster``: three of them joined into a Redis Cluster (tests). ``stack``:
runs the engine, the precompute job and the API as separate local processes, as compose runs
them (``genrec demo``).
"""
