"""The fault-injection suite: real supervisors, injected faults, invariants over a ledger (issue 7)."""
