#!/usr/bin/env bash
# The flake series: the timing-sensitive integration tests, RUNS times in a row (default 20),
# one test at a time (-n 0), in file order (-p no:randomly when pytest-randomly is installed),
# stopping at the first failure with the number of the run that failed.
#
#   tests/flake.sh [RUNS] [pytest options…]      e.g. tests/flake.sh 20, tests/flake.sh 3 -k sigint
#   FLAKE_BUSY=2 tests/flake.sh                  and keep 2 cores busy with busy loops meanwhile
#
# Timing-sensitive: a test that waits for a process or a thread, sleeps, bounds a wall-clock
# duration, pauses a fault point, kills or signals a process, or races sessions or threads.
# A test that comes to be so belongs in TESTS below (`make flake` runs this script).
set -euo pipefail

cd "$(dirname "$0")/.."
PY=.venv/bin/python
RUNS=${1:-20}
shift || true
if ! [[ $RUNS =~ ^[1-9][0-9]*$ ]]; then
	echo "error: RUNS must be a whole number of runs, 1 or more (got '$RUNS')" >&2
	exit 2
fi
BUSY=${FLAKE_BUSY:-0}
if ! [[ $BUSY =~ ^[0-9]+$ ]]; then
	echo "error: FLAKE_BUSY must be a number of busy loops, 0 or more (got '$BUSY')" >&2
	exit 2
fi
if [[ ! -x $PY ]]; then
	echo "error: no $PY: run make venv first" >&2
	exit 2
fi

I=tests/integration
TESTS=(
	# Fault pauses, kill -9, SIGTERM/SIGINT, a database stopped under a run, visibility timeouts.
	"$I/test_faults.py"
	# Failed loads wait for the visibility timeout; overlapping first loads; a catalog race.
	"$I/test_failures.py::test_revoked_insert_deletes_nothing_then_recovers"
	"$I/test_failures.py::test_load_failing_after_receive_deletes_nothing_then_recovers"
	"$I/test_failures.py::test_parallel_first_loads_on_a_fresh_database_refuse_nothing"
	"$I/test_failures.py::test_concurrent_create_is_retried_not_taken_for_a_refused_row"
	"$I/test_failures.py::test_stopped_database_deletes_nothing_then_recovers"
	# A redelivery after a 1 s visibility timeout; a run stopped after N messages.
	"$I/test_ingest_run.py::test_crash_after_commit_means_redelivery_not_loss"
	"$I/test_ingest_run.py::test_max_messages_stops_after_n"
	# /metrics scraped while a run or a service runs; a stop by SIGTERM.
	"$I/test_metrics.py"
	"$I/test_transform_metrics.py"
	"$I/test_transform.py::test_transform_service_takes_new_rows_each_cycle_and_stops_on_sigterm"
	# The recovery service: waits, timeouts, expiry, twenty racing sessions, a kill -9, ages.
	"$I/test_recovery_service.py::test_rolled_back_or_swallowed_requests_yield_nothing"
	"$I/test_recovery_service.py::test_an_answer_exists_only_with_its_committed_audit_row_and_is_read_once"
	"$I/test_recovery_service.py::test_twenty_sessions_in_two_isolation_levels_get_exactly_the_budget"
	"$I/test_recovery_service.py::test_a_service_killed_before_its_commit_answers_once_after_restart"
	"$I/test_recovery_service.py::test_another_officer_cannot_read_an_answer_and_an_expired_one_is_gone"
	"$I/test_recovery_service.py::test_four_eyes_another_officer_approves_and_nobody_approves_their_own"
	"$I/test_recovery_service.py::test_the_service_reports_requests_refusals_and_its_queue"
	"$I/test_recovery_service.py::test_a_request_is_dated_when_it_is_filed_not_when_its_transaction_began"
	# Concurrent processes and threads beside each other.
	"$I/test_bootstrap.py::test_concurrent_bootstraps_and_first_runs_on_fresh_databases"
	"$I/test_lifecycle.py::test_the_loader_keeps_loading_during_retention"
	"$I/test_keys.py::test_rotation_beside_a_running_ingest_and_transform_service"
	"$I/test_keys.py::test_a_transform_and_a_rotation_never_run_at_once"
	"$I/test_security.py::test_no_key_in_server_log_artifacts_or_catalogs"
)

ARGS=(-n 0 -x -q -p no:cacheprovider)
if "$PY" -c "import pytest_randomly" 2>/dev/null; then
	ARGS+=(-p no:randomly)
fi

busy=()
stop_busy() {
	for pid in "${busy[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap stop_busy EXIT
for ((b = 0; b < BUSY; b++)); do
	"$PY" -c "while True: pass" &
	busy+=($!)
done
if ((BUSY)); then
	echo "flake: $BUSY busy loops running (pids ${busy[*]})" >&2
fi

series_start=$SECONDS
for ((run = 1; run <= RUNS; run++)); do
	start=$SECONDS
	if ! "$PY" -m pytest "${ARGS[@]}" "$@" "${TESTS[@]}"; then
		echo "flake: run $run of $RUNS FAILED after $((SECONDS - start)) s; $((run - 1)) passed in a row before it" >&2
		exit 1
	fi
	echo "flake: run $run of $RUNS passed in $((SECONDS - start)) s" >&2
done
echo "flake: $RUNS runs in a row passed in $((SECONDS - series_start)) s" >&2
