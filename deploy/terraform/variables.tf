variable "region" {
  description = "AWS region of the queue, the database and the secrets."
  type        = string
  default     = "us-east-1"
}

variable "name_prefix" {
  description = "Prefix of every resource name (IAM roles, KMS aliases, the DB instance, secrets)."
  type        = string
  default     = "loginvault"
}

variable "queue_name" {
  description = "The SQS queue producers send login events to; its dead-letter queue is <name>-dlq."
  type        = string
  default     = "login-queue"
}

variable "visibility_timeout_seconds" {
  description = "Queue visibility timeout: well above one batch's load time (the ingest extends it while it holds a message)."
  type        = number
  default     = 300
}

variable "message_retention_seconds" {
  description = "How long an unconsumed message stays in the queue (and in the DLQ)."
  type        = number
  default     = 1209600 # 14 days, SQS's maximum
}

variable "vpc_id" {
  description = "VPC of the database."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets (at least two, in different AZs) for the database's subnet group."
  type        = list(string)

  validation {
    condition     = length(var.private_subnet_ids) >= 2
    error_message = "RDS needs subnets in at least two availability zones."
  }
}

variable "db_client_security_group_ids" {
  description = "Security groups allowed to reach PostgreSQL on 5432 (the EKS nodes' or pods' groups)."
  type        = list(string)
}

variable "db_instance_class" {
  description = "RDS instance class."
  type        = string
  default     = "db.t4g.medium"
}

variable "db_engine_version" {
  description = "PostgreSQL version on RDS (major, or major.minor)."
  type        = string
  default     = "15"
}

variable "db_allocated_storage" {
  description = "Initial storage in GiB."
  type        = number
  default     = 50
}

variable "db_max_allocated_storage" {
  description = "Storage autoscaling ceiling in GiB."
  type        = number
  default     = 500
}

variable "db_multi_az" {
  description = "A standby in a second availability zone."
  type        = bool
  default     = true
}

variable "db_backup_retention_days" {
  description = "Days of automated backups (point-in-time recovery window)."
  type        = number
  default     = 14

  validation {
    condition     = var.db_backup_retention_days >= 7 && var.db_backup_retention_days <= 35
    error_message = "Keep between 7 and 35 days of backups."
  }
}

variable "eks_oidc_provider_arn" {
  description = "ARN of the EKS cluster's IAM OIDC provider (IRSA), e.g. arn:aws:iam::123456789012:oidc-provider/oidc.eks.us-east-1.amazonaws.com/id/EXAMPLE."
  type        = string
}

variable "k8s_namespace" {
  description = "Kubernetes namespace of loginvault (deploy/k8s/kustomization.yaml)."
  type        = string
  default     = "loginvault"
}

variable "ingest_service_account" {
  description = "Kubernetes ServiceAccount of the ingest pods (deploy/k8s/serviceaccounts.yaml)."
  type        = string
  default     = "loginvault-ingest"
}

variable "keda_operator_role_arn" {
  description = "IAM role of the KEDA operator; when set, a role it may assume to read the queue's depth is created (keda_scaler_role_arn)."
  type        = string
  default     = null
}

variable "kms_key_admin_arns" {
  description = "IAM principals that administer (not use) the KMS keys, besides the account's IAM policies."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}

variable "hmac_key_version" {
  description = "Raise by one to generate a new LOGINVAULT_HMAC_KEY (rotation: docs/operations.md)."
  type        = number
  default     = 1
}

variable "encryption_key_version" {
  description = "Raise by one to generate a new LOGINVAULT_ENCRYPTION_KEY (rotation: docs/operations.md)."
  type        = number
  default     = 1
}

variable "recovery_service_login" {
  description = "PostgreSQL login of the recovery service (a member of loginvault_recovery_service; the bootstrap creates it)."
  type        = string
  default     = "loginvault_recovery_svc"

  validation {
    condition     = can(regex("^[a-z_][a-z0-9_]{0,62}$", var.recovery_service_login))
    error_message = "A lower-case PostgreSQL identifier (it is used unquoted in the DSN)."
  }
}

variable "recovery_service_password_version" {
  description = "Raise by one to generate a new password for the recovery service's login (docs/operations.md)."
  type        = number
  default     = 1
}
