"""The online side of genrec: the API, the engine service, the precompute job, and what they share.

Imports ``model`` (the shared contract) and never ``training``. A map of the package:

``api/``        the API process (``genrec serve``): ``app`` assembles it, ``routes`` (one router per
                resource) and ``schemas`` declare it, ``deps`` is what routes get from the app,
                ``recommend`` the recommend logic without HTTP, ``render`` its JSON; ``docs``, ``ui``
``engine/``     the model as the service reaches it: ``protocol`` (``AsyncRecommender``, the wire
                format), ``runner`` (``LocalRecommender``: a ``Recommender`` in this process),
                ``client`` (``RemoteRecommender``: the engine service over HTTP), ``server`` (the
                engine service, ``genrec engine``), ``connect`` (the one place a recommender is
                chosen and built: in process or ENGINE_URL)
``precompute/`` the job that fills the cache (``genrec precompute``): ``job``, ``sources``
                (histories file, dataset, history store), ``checkpoint`` (resume state in Redis)
``local/``      not part of a deployment: ``redis_server`` (an embedded Redis for tests and
                ``genrec serve`` without REDIS_URL), ``redis_cluster`` (three of them joined into a
                Redis Cluster, for tests), ``stack`` (the demo's process supervisor)
``http.py``     what both HTTP apps share: error body, validation messages, health, metrics
``cli.py``      the ``serve``, ``engine``, ``precompute`` and ``migrate-keys`` commands
``migrate.py``  ``genrec migrate-keys``: the per-user keys of earlier releases renamed
``batch.py``    ``genrec recommend-batch``: histories JSONL in, top-K JSONL out, no Redis

Shared by the API and the precompute job, so at the top: ``settings.py`` (``Settings``, every
knob, from the environment), ``cache.py`` (each user's top-K in Redis), ``history.py`` (user
histories in Redis, and the model input of one), ``keys.py`` (every Redis key, each user's
with the user's hash tag), ``redis_client.py`` (the one Redis client, a server's or a cluster's)
and ``request_id.py`` (the request id on responses and in every log line).

One name per thing: the object that computes lists is a recommender (``model.recommender.
Recommender``, blocking; ``AsyncRecommender`` as the service uses it); the process that hosts
the model behind HTTP is the engine service.
"""
