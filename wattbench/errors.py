"""Errors the command line turns into one line and an exit code, never a traceback."""


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""
