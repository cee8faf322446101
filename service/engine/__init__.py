"""The engine: the model that computes lists, as the service runs it and reaches it.

A ``Recommender`` (``model.recommender``) computes lists, blocking; the service talks to an
``AsyncRecommender`` (``protocol``): a ``LocalRecommender`` (``runner``) that runs one in this
process off the event loop, batching concurrent requests, or a ``RemoteRecommender``
(``client``) for the engine service, the process that hosts the model behind HTTP
(``server``, ``genrec engine``). ``connect`` is the one place a recommender is chosen and built:
in process or at ENGINE_URL, for the API, the precompute job, ``recommend-batch`` and ``eval``.
"""
