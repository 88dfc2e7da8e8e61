"""In-process tests against every configured database (marker ``db``): no supervisor, no other process."""
