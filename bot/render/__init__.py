"""Block Kit rendering: pure functions from state to message and modal payloads."""
