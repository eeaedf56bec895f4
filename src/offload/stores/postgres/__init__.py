"""The PostgreSQL store; needs the ``postgres`` extra (psycopg 3 and psycopg-pool)."""

from offload.stores.postgres.appconn import psycopg_connection
from offload.stores.postgres.store import PostgresStore

__all__ = ["PostgresStore", "psycopg_connection"]
