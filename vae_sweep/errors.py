"""The one error type for user mistakes: a single line naming the setting and what it accepts."""


class ConfigError(ValueError):
    """A setting the user gave cannot work. The message is one line: `setting=value: what it accepts`."""
