"""The ``pystream`` command line."""
