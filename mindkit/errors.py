"""One error type for everything a user can get wrong.

A ``MindkitError`` names the key (or file), the value that was seen and what was expected, so the CLI can print
it as one line and exit non-zero instead of showing a traceback from deep inside MindSpore.
"""


class MindkitError(Exception):
    def __init__(self, key, value=None, expected=None, *, hint=None):
        self.key, self.value, self.expected, self.hint = key, value, expected, hint
        parts = [str(key)]
        if value is not None:
            parts.append(f"got {value!r}")
        if expected is not None:
            parts.append(f"expected {expected}")
        msg = ": ".join(parts[:1]) + (": " + "; ".join(parts[1:]) if len(parts) > 1 else "")
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)


class ConfigError(MindkitError):
    """A bad config key or value (YAML or command line)."""


class CheckpointError(MindkitError):
    """A checkpoint file that does not match the model (missing, extra or mis-shaped parameter)."""


class InputError(MindkitError):
    """Bad user data: prompt files, prompts too long, empty inputs."""
