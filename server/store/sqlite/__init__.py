"""The Store on SQLite: engine (the database thread, group commit), schema (migrations), store (the methods)."""
