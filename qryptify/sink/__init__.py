"""The sink's logic, shared by ``services.sink`` and ``qryptify replay``.

- ``rows``: a batch's candle rows as COPY text (the hot path's output format).
- ``batch``: pure rules: decode and validate records, de-duplicate, sync_state, offsets.
- ``loop``: the consume → stage → write → commit loop around those rules.

Nothing is imported here, so ``qryptify.db`` can use ``rows`` without loading the loop.
"""
