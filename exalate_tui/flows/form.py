"""What the wizards share: per-field errors kept current as fields change."""

from __future__ import annotations

from collections.abc import Callable


def problem(label: str, check: Callable[[str], object], value: str) -> str | None:
    """`check`'s reason as a sentence about the field, or None when `value` passes."""
    try:
        check(value)
    except ValueError as error:
        return f"{label} {error}."
    return None


class Form:
    """Per-field errors, kept current as fields change; `validate` says what is wrong."""

    errors: dict[str, str]

    def validate(self, field: str) -> str | None:
        raise NotImplementedError

    def revalidate(self, field: str) -> str | None:
        found = self.validate(field)
        if found:
            self.errors[field] = found
        else:
            self.errors.pop(field, None)
        return found
