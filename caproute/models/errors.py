"""Errors of the model toolkit."""


class WeightsMismatchError(ValueError):
    """The given weights do not fit the model: lists every missing, unexpected, misshapen or
    mistyped tensor at once."""

    def __init__(self, model_name, problems):
        self.problems = list(problems)
        lines = "\n  - ".join(self.problems)
        super().__init__(
            f"weights do not fit model {model_name!r} ({len(self.problems)} problem"
            f"{'s' if len(self.problems) != 1 else ''}):\n  - {lines}"
        )


class WeightsFileError(ValueError):
    """A weights file is unreadable: truncated, malformed header, bad metadata, wrong checksum."""
