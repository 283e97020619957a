"""The one error type for user mistakes: a single line naming the setting and what it accepts."""


class ConfigError(ValueError):
    """A setting the user gave cannot work. The message is one line: `setting=value: what it accepts`."""


def instantiate_group(node, key: str, **kwargs):
    """`hydra.utils.instantiate` for the config group `key`, with user mistakes kept to one line.

    Hydra wraps whatever the target raises in an InstantiationException: a ConfigError from inside comes
    back out as itself, and a bad keyword (`model.foo=1`) or value type becomes a ConfigError naming the group.
    """
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        return instantiate(node, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, ConfigError):
            raise cause from None
        if isinstance(cause, (TypeError, ValueError)):
            raise ConfigError(f"{key}: {cause}") from None
        raise
