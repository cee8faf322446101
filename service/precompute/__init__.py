"""The precompute job: every user's top-K computed ahead of requests and written to the cache.

``job``: the run (``precompute``, and ``run_precompute`` from the settings), its summary and
failure; ``sources``: where the users come from (a histories file, a dataset, the history
store) and their batches; ``checkpoint``: the resume state in Redis (a position checkpoint, or
the set of done batches of a Ray job) and each batch's round trips, the write that lands the
lists and that state together; ``ray_input`` and ``ray_job``: the same job on a Ray cluster
(``genrec precompute --ray``), batches planned from the input's row order and run by a pool of
workers, one engine each (ray is imported only there).
"""
