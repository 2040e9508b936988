"""loginvault: SQS login events into PostgreSQL with the personal data masked (see docs/architecture.md)."""


class LoginvaultError(Exception):
    """An error the user can cause and fix (bad DSN, unreachable queue, missing key, bad setting).

    The command line prints its message as one line, without a traceback, and exits with
    `exit_code`.
    """

    exit_code = 1
