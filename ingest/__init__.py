"""loginvault ingest: SQS → PostgreSQL `raw` with dlt, plus the local stack, sample data and PII recovery."""


class LoginvaultError(Exception):
    """An error the user can cause and fix (bad DSN, unreachable queue, missing key).

    The CLI prints its message as one line and exits non-zero, without a traceback.
    """
