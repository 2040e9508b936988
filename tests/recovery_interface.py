"""The recovery service's names, as its interface fixes them (issue 16): the deployment files
(docker-compose.yml, deploy/k8s, deploy/terraform) and the monitoring (alerts, dashboard) use them,
and tests/unit/test_deploy_static.py and tests/unit/test_monitoring.py check those files against
them.

The checks that compare the deployment with the code (every variable a manifest sets is read by
some code, every command parses, every metric a rule uses is exported) accept these names only
while the service's code is not there yet, i.e. while the CLI has no `recovery serve` command:
`pending()`. Once the command exists, the same checks hold these names against the code like every
other one, so a name the code spells differently fails them.
"""

from __future__ import annotations

import contextlib
import io
from functools import cache

ROLE = "loginvault_recovery_service"
# The login the local stack and docker-compose.yml create for it (config.Workload.local_login).
LOGIN = "loginvault_recovery_svc"
DSN_ENV = f"{ROLE.upper()}_DSN"  # config.Workload.dsn_env
PASSWORD_ENV = f"{ROLE.upper()}_PASSWORD"  # config.Workload.password_env: .local/keys.env, .env
COMMAND = ("recovery", "serve")
SETTINGS_ENV = (
    "RECOVERY_METRICS_PORT",
    "RECOVERY_METRICS_HOST",
    "LOGINVAULT_RECOVERY_APPROVALS",
    "LOGINVAULT_RECOVERY_ANSWER_TTL_SECONDS",
)
# Families as the code names them (a counter's samples add _total).
METRICS = (
    "loginvault_recovery_requests",
    "loginvault_recovery_budget_refusals",
    "loginvault_recovery_oldest_waiting_request_seconds",
    "loginvault_recovery_last_poll_timestamp_seconds",
)
REQUEST_KINDS = ("recover_value", "recover_token", "erase")


@cache
def pending() -> bool:
    """True while `loginvault recovery serve` is not a command of the CLI (its code is elsewhere)."""
    from ingest import cli

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            cli.build_parser().parse_args([*COMMAND, "--help"])
        except SystemExit as exc:
            return exc.code != 0
    return False
