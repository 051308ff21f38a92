"""The Store on PostgreSQL: engine (pool, timeouts, retries, outages), schema (migrations), store (the methods)."""
