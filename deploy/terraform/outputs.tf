output "queue_url" {
  description = "SQS_QUEUE_URL of the ingest (deploy/k8s/configmap.yaml)."
  value       = aws_sqs_queue.login.url
}

output "queue_arn" {
  description = "ARN of login-queue."
  value       = aws_sqs_queue.login.arn
}

output "dlq_url" {
  description = "URL of login-queue-dlq (`loginvault dlq` finds it through the redrive policy)."
  value       = aws_sqs_queue.login_dlq.url
}

output "sqs_kms_key_arn" {
  description = "KMS key of the queues: producers need kms:GenerateDataKey and kms:Decrypt on it."
  value       = aws_kms_key.sqs.arn
}

output "data_kms_key_arn" {
  description = "KMS key of RDS storage and the secrets."
  value       = aws_kms_key.data.arn
}

output "ingest_role_arn" {
  description = "IRSA role of the ingest: the eks.amazonaws.com/role-arn annotation of the loginvault-ingest ServiceAccount."
  value       = aws_iam_role.ingest.arn
}

output "keda_scaler_role_arn" {
  description = "Role for KEDA's TriggerAuthentication (null without keda_operator_role_arn)."
  value       = try(aws_iam_role.keda_scaler[0].arn, null)
}

output "db_address" {
  description = "Host name of the PostgreSQL instance (private)."
  value       = aws_db_instance.loginvault.address
}

output "db_port" {
  description = "PostgreSQL port."
  value       = aws_db_instance.loginvault.port
}

output "db_master_user_secret_arn" {
  description = "Secrets Manager secret holding the master user's password (managed by RDS)."
  value       = aws_db_instance.loginvault.master_user_secret[0].secret_arn
}

output "hmac_key_secret_arn" {
  description = "Secrets Manager secret of LOGINVAULT_HMAC_KEY."
  value       = aws_secretsmanager_secret.hmac_key.arn
}

output "encryption_key_secret_arn" {
  description = "Secrets Manager secret of LOGINVAULT_ENCRYPTION_KEY."
  value       = aws_secretsmanager_secret.encryption_key.arn
}

output "recovery_service_dsn_secret_arn" {
  description = "Secrets Manager secret of LOGINVAULT_RECOVERY_SERVICE_DSN (the loginvault-recovery Secret's DSN)."
  value       = aws_secretsmanager_secret.recovery_service_dsn.arn
}
