"""Errors of the model toolkit."""


class WeightsMismatchError(ValueError):
    """The given weights do not fit the model.

    The message lists every missing, unexpected, misshapen or mistyped tensor at once.

    Parameters
    ----------
    model_name : str
        The model (or checkpoint layout) the weights were meant for.
    problems : iterable of str
        One sentence per problem; kept as the ``problems`` attribute.
    """

    def __init__(self, model_name, problems):
        self.problems = list(problems)
        lines = "\n  - ".join(self.problems)
        super().__init__(
            f"weights do not fit model {model_name!r} ({len(self.problems)} problem"
            f"{'s' if len(self.problems) != 1 else ''}):\n  - {lines}"
        )


class WeightsFileError(ValueError):
    """A weights file is unreadable: truncated, malformed header, bad metadata, wrong checksum."""
