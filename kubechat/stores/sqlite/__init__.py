"""The embedded stores: SQLite files under STATE_DIR, one thread per database."""
