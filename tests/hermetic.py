"""The tests' environment: nothing of the developer's shell reaches a test or the commands it runs
(no PG_DSN, SQS_*, keys or stack settings), only moto's fake AWS credentials and fresh keys."""

from __future__ import annotations

import os
import secrets

REGION = "us-east-1"
# Variables that would point a test or its subprocess at something else than its own services.
FOREIGN_ENV_PREFIXES = ("PG", "SQS_", "AWS_", "LOGINVAULT_", "INGEST_", "TRANSFORM_")


def base_env() -> dict[str, str]:
    """os.environ without anything that could point a subprocess elsewhere, plus fake AWS credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_ENV_PREFIXES)}
    env.update(
        AWS_ACCESS_KEY_ID="test",
        AWS_SECRET_ACCESS_KEY="test",
        AWS_REGION=REGION,
        LOGINVAULT_HMAC_KEY=secrets.token_hex(32),
        LOGINVAULT_ENCRYPTION_KEY=secrets.token_hex(32),
        # A stray `stack` command must never reach the developer's .local/.
        LOGINVAULT_LOCAL_DIR="/nonexistent/loginvault-tests",
        PYTHONUNBUFFERED="1",
    )
    return env
