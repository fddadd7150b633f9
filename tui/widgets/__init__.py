"""Widgets of the terminal UI; each posts messages up and takes method calls down."""
