"""The precompute job: every user's top-K computed ahead of requests and written to the cache.

``job``: the run (``precompute``, and ``run_precompute`` from the settings), its summary and
failure; ``sources``: where the users come from (a histories file, a dataset, the history
store) and their batches; ``checkpoint``: the resume checkpoint in Redis and each batch's
round trips, the write that lands the lists and the checkpoint together.
"""
