"""What every command's settings share: the error for a setting that cannot be used."""


class ConfigError(ValueError):
    """A setting that cannot be used; the message is one line naming it."""
