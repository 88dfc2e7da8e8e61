"""The task store: every query GTA runs on its tables, one method each (`TaskStore`).

`task_store.TaskStore` is the store a process uses; it mixes in one part per concern —
`schema` (the start check and `migrate`), `inserts` (the submit side, written once as a plan
without I/O), `operations` (monitor, cleanup, admin), `workflows` (results, groups, chains),
`limits` and `attempts` (the attempt log) — over `base.StoreBase` (the table, its statements
and how they run). `rows` turns rows into values, `roster` reads the supervisors' roster. The
SQL text itself is in `sql/`: a `Dialect` per database and the named statements of each part,
built once per table.
"""
from .task_store import TaskStore

__all__ = ["TaskStore"]
