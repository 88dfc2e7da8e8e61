"""Unit tests (marker ``unit``): no database, no process; pure functions and objects in this process."""
