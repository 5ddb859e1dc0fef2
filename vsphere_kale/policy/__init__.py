"""Pure decisions: no I/O, no API clients, no tornado (STYLE.md)."""
