"""The one failure every command may raise: exit status 1 with a one-line reason."""


class Failure(Exception):
    """Exit status 1 with a one-line reason."""
