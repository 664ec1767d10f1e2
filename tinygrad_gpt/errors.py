"""Every error a user of tinygrad_gpt may see, in one module that imports nothing.

The commands turn each into one ``error:`` line (cli.py). Each class keeps the built-in
base it always had, so ``except ValueError`` and the like still catch it; the modules
that raise them import them from here.
"""


class DeviceError(RuntimeError):
    """Raised when a device is unknown, unavailable, or mixed inside one op."""


class DataError(ValueError):
    """Raised when training text cannot be found, downloaded, or decoded, or a split is too short."""


class CheckpointError(ValueError):
    """Raised when a tensor file cannot be written, or is missing, damaged, or not safetensors."""


class LockError(RuntimeError):
    """The lock is held by another live process, or cannot be created."""


class ConfigError(ValueError):
    """A flag value that cannot be used; the message names the flag."""


class UsageError(ValueError):
    """A bad command line."""


class TrainingError(RuntimeError):
    """The run cannot go on (for example, the loss became NaN)."""


class DistributedError(RuntimeError):
    """MPI cannot be used as asked, or the ranks disagree (the message names them)."""


class AnomalyError(FloatingPointError):
    """An op produced NaN or infinity from finite values (raised only in anomaly mode)."""


class GradcheckError(AssertionError):
    """Backward disagrees with the numerical derivative."""


class DoubleBackwardError(RuntimeError):
    """An op's backward cannot be run on Tensors, so its gradient cannot be differentiated."""


class GradcheckFailure(RuntimeError):
    """At least one op's backward disagrees with central differences."""


class VizError(RuntimeError):
    """A picture cannot be made: a missing program or library, or unusable input."""


class FileError(OSError):
    """An operating-system error on one of the project's files; the message names the file, the
    operation and the cause. An OSError still, so ``except OSError`` catches it as before."""


class RecipeError(ValueError):
    """A recipe that cannot be found or read, or that holds a key or value the command cannot use."""


class Stopped(RuntimeError):
    """The run stopped on a signal; ``exit_code`` is the one a shell expects for it. ``saved``: a
    checkpoint of the stopping point was written, and the message ends by saying how to resume."""

    def __init__(self, message, exit_code, saved=False):
        super().__init__(message + ("; resume with --init_from=resume" if saved else ""))
        self.what, self.exit_code, self.saved = message, exit_code, saved
