"""The SQLite store: one package with its SQL in files beside it, the template a SQL store
follows.

Modules: ``store`` (the store's async face: URL, open and close, each operation),
``writer`` (the thread that owns the connection and groups operations into transactions),
``ops`` (what one operation does on that connection, statement by statement), ``schema``
(the layout version and the migrations run on open), ``queries`` (reading the ``.sql``
files). SQL: ``queries.sql`` (every query, by name) and ``migrations/NNNN_<what>.sql`` (the
layout, one numbered step per version).
"""

from offload.stores.sqlite.store import SQLiteStore

__all__ = ["SQLiteStore"]
