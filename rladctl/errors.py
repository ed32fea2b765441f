"""One exception root for mistakes a user can fix.

The CLI turns any ``RladError`` into ``error: <what>, <where>. <how to fix>`` on stderr and exit
code 2, without a traceback (``RLADCTL_DEBUG=1`` shows it). Everything else is a bug and keeps its
traceback. Subclasses also inherit the stdlib type they stand for, so callers that catch
``ValueError`` or ``FileNotFoundError`` keep working.
"""

from __future__ import annotations


class RladError(Exception):
    """A user mistake: one line saying what is wrong, where, and how to fix it."""

    def __init__(self, what: str, where: str | None = None, fix: str | None = None):
        self.what, self.where, self.fix = what, where, fix
        super().__init__(self.line())

    def line(self) -> str:
        text = _sentence(f"{self.what}, {self.where}" if self.where else self.what)
        if self.fix:
            text += f" {_sentence(self.fix)}"
        return " ".join(text.split())  # exactly one line


def _sentence(text: str) -> str:
    """End with one full stop, unless the text already ends a sentence ("did you mean 'x'?")."""
    text = text.strip().rstrip(".")
    return text if text.endswith(("?", "!")) else f"{text}."


class ConfigError(RladError, ValueError):
    """Bad recipe key, type or value."""


class ArtifactError(RladError, ValueError):
    """Missing, incomplete, corrupt or mismatched artifact."""


class ModelError(RladError, ValueError):
    """Model or tokenizer cannot be used as asked."""


class MissingPathError(RladError, FileNotFoundError):
    """A path the user named does not exist."""


class MissingDependencyError(RladError, ImportError):
    """An optional extra is not installed."""


class EngineError(RladError, RuntimeError):
    """An inference engine (vLLM) failed to start or died; re-running the command resumes."""


def close_matches(word: str, choices) -> str:
    """A 'did you mean' suffix, or '' when nothing is close."""
    import difflib

    found = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean '{found[0]}'?" if found else ""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (libraries' messages run to many lines)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
