"""The Textual terminal UI: watch swarms live, browse past runs. Never imports torch."""
