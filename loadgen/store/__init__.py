"""The results database (DuckDB): runs, requests, streamed events and the views over them."""

from loadgen.store.db import Store, StoreError

__all__ = ["Store", "StoreError"]
