"""loginvault: SQS login events into PostgreSQL with the personal data masked (see docs/architecture.md)."""


class LoginvaultError(Exception):
    """An error the user can cause and fix (bad DSN, unreachable queue, missing key, bad setting).

    The command line prints its message as one line, without a traceback, and exits with
    `exit_code`.
    """

    exit_code = 1


def count(n: int, noun: str, plural: str | None = None) -> str:
    """`n` and the noun in its number: "1 row", "2 rows", "0 rows" (`plural` when not noun + "s")."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
