"""API keys: creation, storage as hashes, verification and the route dependency."""
