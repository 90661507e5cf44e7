"""Exceptions that the CLI turns into one line on stderr and an exit code (never a traceback)."""


class VaediffError(Exception):
    """A problem the user can fix: bad input, missing files, a refused directory. Exit code 2."""

    exit_code = 2


class DataError(VaediffError):
    """A data set that is missing, corrupt or inconsistent."""


class RunError(VaediffError):
    """A run or output directory that cannot be used as asked."""


class ConfigError(VaediffError):
    """A configuration (from the command line or a JSON file) that is invalid."""


class TrainingDiverged(VaediffError):
    """The loss became NaN or infinite. Exit code 3: the last good checkpoint is kept."""

    exit_code = 3


class AlreadyFinished(VaediffError):
    """--resume asked for a limit the run has already reached: nothing to do, nothing changed. Exit code 0."""

    exit_code = 0


class Interrupted(VaediffError):
    """SIGINT or SIGTERM arrived; a resumable checkpoint was written. Exit code 128 + signal."""

    def __init__(self, message: str, signal_number: int):
        super().__init__(message)
        self.exit_code = 128 + signal_number
