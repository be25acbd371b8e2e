"""Database access: connection strings, pools and migrations."""
