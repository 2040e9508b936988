"""Subject erasure (`loginvault erase --user-id U --reason R`), as a privacy officer's own
login (a member of loginvault_pii_admin), through the database's pii.erase_subject.

The function (a SECURITY DEFINER of the NOLOGIN loginvault_eraser) removes the subject's rows
from raw, staging, the marts and the rejections, shreds the vault values no other login
carries, adds the subject to the list the transform keeps out, and audits it with a keyed hash
of the user id, never the id, in one transaction. The command holds the transform lock
meanwhile, so that no build re-stages the subject's rows under it.
"""

from __future__ import annotations

from dataclasses import dataclass

from ingest import LoginvaultError, config, db, keys


@dataclass(frozen=True)
class Erasure:
    raw_rows: int
    staged_rows: int
    logins: int
    rejections: int
    vault_values: int

    def line(self, dry_run: bool) -> str:
        verb = "would erase" if dry_run else "erased"
        return (
            f"erase: {verb} {self.raw_rows} raw deliveries, {self.staged_rows} staged rows, {self.logins} logins,"
            f" {self.rejections} rejections and {self.vault_values} vault values no other login carries"
            " (audited)"
        )


def erase(user_id: str, reason: str, dry_run: bool = False) -> Erasure:
    import psycopg

    if not reason or not reason.strip():
        raise LoginvaultError("a reason is required (--reason): it is written to the erasure audit")
    if not user_id:
        raise LoginvaultError("a user id is required (--user-id)")
    with (
        keys.exclusive("erase", wait_seconds=300, role=config.PII_ADMIN_ROLE),
        db.connect(config.PII_ADMIN_ROLE, options=keys.session_options(), autocommit=True) as conn,
    ):
        try:
            row = conn.execute(
                "SELECT raw_rows, staged_rows, logins, rejections, vault_values FROM pii.erase_subject(%s::text, %s::text, %s)",
                (user_id, reason, dry_run),
            ).fetchone()
        except psycopg.errors.InvalidParameterValue as exc:
            keys.check_environment(conn)  # names the kind and both fingerprints when a key is stale
            raise LoginvaultError(db.first_line(exc)) from None
        except psycopg.errors.InsufficientPrivilege as exc:
            raise LoginvaultError(
                f"not authorized to erase ({db.first_line(exc)}): only members of {config.PII_ADMIN_ROLE} may"
            ) from None
        except psycopg.Error as exc:
            raise LoginvaultError(db.first_line(exc)) from None
    return Erasure(*row)
