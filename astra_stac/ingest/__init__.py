"""Putting provider items into pgstac: normalisation and transactional loading."""
