"""The errors vae_sweep reports as one line at its entry points (`__main__`, the analysis command, the sweeper's
`sweep`), never as a traceback, and the helpers that word them. Code below the entry points raises these; only the
entry points turn them into `SystemExit`."""

import difflib


class VaeSweepError(Exception):
    """Something the user can act on; its message is the one line the entry point prints."""


class ConfigError(VaeSweepError, ValueError):
    """A setting the user gave cannot work. The message is one line: `setting=value: what it accepts`."""


class SweepStopped(VaeSweepError):
    """A sweep stopped before its end on purpose (Ctrl-C, a signal, its failure budget); the message says what was
    recorded and how to go on. Printed as it is, without `error:` unless it begins so."""


class RunFailed(VaeSweepError):
    """A single job stopped by a fault of its surroundings (a full disk, a folder it cannot write); the message says
    what it left on disk."""


def one_line(e: VaeSweepError) -> str:
    """What an entry point prints for `e`: `error: <message>` for a mistake, the message itself for a stop."""
    return str(e) if isinstance(e, SweepStopped) else f"error: {e}"


def first_line(e: BaseException) -> str:
    """The first line of a library's (often multi-line) message."""
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def unknown_setting(setting: str, where: str, known: list[str], can_add: bool, name: str | None = None) -> ConfigError:
    """`setting` names nothing in `where` (its part `name`, by default its last): say so, with the nearest known name."""
    name = name or setting.rpartition(".")[2]
    near = difflib.get_close_matches(name, known, n=1)
    hint = f"did you mean {near[0]}? " if near else ""
    tail = f"(add a new key with +{setting}=...)" if can_add else f"(its settings: {', '.join(sorted(known))})"
    return ConfigError(f"{setting}: {where} has no setting {name!r}; {hint}{tail}")
