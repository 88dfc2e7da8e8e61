"""The database layer: opening connections, classifying driver errors, transactions.

Below the store and above the leaves: nothing here knows the task table's statements.
`connect` opens a peewee database per URL; `driver_errors` says what a driver's error means;
`transactions` runs work in a transaction (deadlocks retried) or one statement in autocommit;
`read_timeout` cuts PostgreSQL reads the server never answers; `drivers` keeps processes from
importing drivers they do not use; `sqlite_ids` and `sqlite_locks` are SQLite's own troubles;
`wakeup` pokes the supervisors on this host after a commit.
"""
