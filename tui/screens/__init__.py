"""Screens of the terminal UI, one module and one `.tcss` file each."""
