"""The stack's exceptions. Each message is one line; `python -m stack` prints it and exits 2.

StackError
  ConfigError   the stack file is missing, not TOML, or fails validation (names the field)
  StartError    a model could not be converted, or a process did not come up
"""

from __future__ import annotations


class StackError(Exception):
    pass


class ConfigError(StackError):
    pass


class StartError(StackError):
    pass
