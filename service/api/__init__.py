"""The API process (``genrec serve``): recommendations, events, histories, items, health, metrics.

``app`` assembles the FastAPI app (its lifespan owns the Redis client and the recommender);
``routes`` declares the endpoints, one module-level router per resource, and ``schemas`` their
request and response bodies; ``deps`` is what routes get from the app (the RecommendService,
the API-key check, the metrics); ``recommend`` is the recommend logic without HTTP and
``render`` the JSON body of its answers; ``docs`` and ``ui`` serve /docs and /ui.
"""
