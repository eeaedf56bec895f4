"""The PostgreSQL store; needs the ``postgres`` extra (psycopg 3 and psycopg-pool)."""

from offload.stores.postgres.store import PostgresStore, psycopg_connection

__all__ = ["PostgresStore", "psycopg_connection"]
