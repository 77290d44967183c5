"""Errors a user can fix. The command-line entry points print them as one line and exit 2."""


class UserError(ValueError):
    """Bad input from the user (config, data, paths): the message names the problem and the fix."""


class ConfigError(UserError):
    """The configuration is invalid: an unknown key, a wrong type or an out-of-range value."""


class DataError(UserError):
    """Unusable data: a missing folder, too few classes, a class with no readable image."""
