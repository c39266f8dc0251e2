"""The one error type for bad input: it names the file, the place in it and what was expected."""

from __future__ import annotations


class SpecError(Exception):
    """Invalid input (workload, endpoint, trace or option). The CLI turns it into exit status 2."""

    def __init__(
        self,
        source: str,
        message: str,
        *,
        where: str | None = None,
        line: int | None = None,
        more: list[SpecError] | None = None,
    ):
        self.source = source
        self.where = where
        self.line = line
        self.message = message
        self.more = more or []  # the file's other problems, each reported with its own place
        super().__init__(str(self))

    def one(self) -> str:
        place = self.source if self.line is None else f"{self.source}:{self.line}"
        if self.where:
            place = f"{place}: {self.where}"
        return f"{place}: {self.message}"

    def __str__(self) -> str:
        return "\n".join([self.one(), *(e.one() for e in self.more)])

    @staticmethod
    def all(errors: list[SpecError]) -> SpecError:
        """One error that reports them all (the first, then the others)."""
        first, *rest = errors
        return SpecError(first.source, first.message, where=first.where, line=first.line, more=rest)
