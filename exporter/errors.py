"""dbperf's errors and exit codes (docs/exit-codes.md), the same for every command:

- 0: done.
- 1 (:class:`RuntimeFailure`, :class:`UnavailableError`): the input was fine, something failed
  while running: a server, Prometheus or Alertmanager cannot be reached or refuses, a check found
  a failure (``check-config --connect``), the period holds no data, a port is taken, a file cannot
  be written.
- 2 (:class:`UsageError`, :class:`~exporter.config.ConfigError`): bad input, refused before anything
  is done: an argument, the config file, a file an option names, a request the target refuses as
  such (an unknown silence id, SQL the role may not explain).
- 130: interrupted (Ctrl-C) before the command could stop by itself.

Some commands pass another program's code through (``pipelines run``: the command's own, 126/127
when it cannot be run, 128+N when signal N killed it; ``demo`` stopped by signal N while starting:
128+N).

A command raises one of these and :func:`exporter.cli.main` prints ``dbperf COMMAND: message``
(one line, the ``secrets`` replaced by ``***``) and returns :attr:`~DbperfError.exit_code`. This
module imports nothing of dbperf's: every other one may import it."""

from __future__ import annotations

import argparse

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class DbperfError(Exception):
    """An error a command reports in one line and an exit code (by default 1).

    ``command`` replaces the ``dbperf COMMAND`` the line starts with (a sub-command's parser:
    ``dbperf pipelines run``); ``secrets`` (a DSN's password ...) are never printed."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, *, command: str | None = None, secrets=()):
        super().__init__(message)
        self.command = command
        self.secrets = tuple(s for s in secrets if s)

    def hide(self, *secrets) -> "DbperfError":
        """Also keep ``secrets`` out of the printed line; returns the error (``raise exc.hide(pw)``)."""
        self.secrets += tuple(s for s in secrets if s)
        return self

    def describe(self) -> str:
        """The line after ``dbperf COMMAND: ``."""
        return str(self)


class UsageError(DbperfError, ValueError):
    """Bad input (an argument, the config, a file an option names): exit code 2."""

    exit_code = EXIT_USAGE


class RuntimeFailure(DbperfError):
    """Something failed while running (a failed check, an empty report period, a port in use,
    a file that cannot be written): exit code 1."""

    exit_code = EXIT_FAILURE


class UnavailableError(RuntimeFailure):
    """A server, Prometheus or Alertmanager cannot be reached, or failed: exit code 1."""


class OneLineParser(argparse.ArgumentParser):
    """argparse's usage errors (also an unknown option) as a :class:`UsageError` naming the
    (sub-)command, printed as one line with exit code 2, before anything runs. Sub-parsers made
    by ``add_subparsers`` are of this class too."""

    def error(self, message: str):
        raise UsageError(f"{' '.join(str(message).split())} (see {self.prog} --help)", command=self.prog)

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        if extras:  # the sub-command's own parser says so, with its name
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras
