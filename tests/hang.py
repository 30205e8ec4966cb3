"""Subprocesses in tests get a bound only against a hang, never a timing assertion: a loaded machine
may run a CLI call 10x slower than a quiet one, and that must not fail a test."""

HANG_GUARD = 900  # seconds
