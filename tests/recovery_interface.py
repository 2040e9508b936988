"""The recovery service's names as the code defines them, for the tests that check the deployment
files (docker-compose.yml, deploy/k8s, deploy/terraform) and the monitoring (alerts, dashboard)
against them: tests/unit/test_deploy_static.py and tests/unit/test_monitoring.py."""

from __future__ import annotations

from ingest import config, settings
from ingest.settings import RecoveryServiceSettings
from ingest.vault.service_metrics import METRIC_NAMES

ROLE = config.RECOVERY_SERVICE_ROLE
_WORKLOAD = config.WORKLOADS[ROLE]
LOGIN = _WORKLOAD.local_login  # the login the local stack and docker-compose.yml create for it
DSN_ENV = _WORKLOAD.dsn_env
PASSWORD_ENV = _WORKLOAD.password_env  # .local/keys.env, docker compose's .env
COMMAND = ("recovery", "serve")
# The service's own settings (its login and the keys are credentials, not settings).
SETTINGS_ENV = tuple(name for _, source in settings.sources(RecoveryServiceSettings).values() for name in source.env)
# Families as the code names them (a counter's samples add _total).
METRICS = tuple(name.removesuffix("_total") for name in METRIC_NAMES)
REQUEST_KINDS = ("recover_value", "recover_token", "erase")
