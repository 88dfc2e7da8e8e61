"""The SQL text of the store: `dialects` (what differs between SQLite, PostgreSQL and
MySQL/MariaDB) and the named statements of each part of the store (`statements` for the task
table's hot path, then `operations`, `workflows`, `limits`, `attempts`), built once per table."""
