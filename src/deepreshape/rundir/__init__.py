"""Run directories: the unit every command reads and writes (`run`: a loaded run, its
checkpoint and lock)."""
