"""The one exception type that the command-line tools turn into a one-line message."""


class UserError(Exception):
    """Something the user pointed at or asked for cannot be used.

    The command-line tools print its message on one line of stderr and exit with status 2,
    without a traceback: the message must say what is wrong and what to do instead.
    """
