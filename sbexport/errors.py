"""The exception every user-facing failure raises. The CLI prints its message on one line and
exits non-zero; anything else reaching the CLI is a bug and keeps its traceback."""


class SbexportError(Exception):
    """A failure the user can act on; the message says what and where (file, field, tensor)."""


class ConfigError(SbexportError, ValueError):
    """A config value that cannot build a model; the message names the field."""


class CheckpointError(SbexportError):
    """A checkpoint that cannot be found or loaded; the message names the file and tensor."""


class ExportError(SbexportError):
    """An export that failed or produced a file that does not hold to the reference."""


class ParityError(SbexportError):
    """An exported file whose outputs differ from the reference beyond the task's tolerance."""


def first_line(error: BaseException, limit: int = 300) -> str:
    """The first line of `error`'s message, at most `limit` characters; "" when it has none.
    Third-party errors (torch.export, ONNX Runtime, safetensors) carry pages of context: the
    first line is the one that fits an sbexport error line."""
    lines = str(error).strip().splitlines()
    return lines[0][:limit] if lines else ""


class DeviceError(SbexportError):
    """A device reached over adb that cannot be used, or a connection lost; the message names
    the device's serial and says what to do (and what was left on the device, if anything)."""
