"""The one error every ``rater`` command raises for a problem with what the user asked for."""


class UsageError(Exception):
    """A problem with what the user asked for, printed as ``rater: <message>``."""
