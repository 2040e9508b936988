# PostgreSQL 15 on RDS: private, encrypted with the data key, TLS enforced, backed up daily with
# point-in-time recovery, protected from deletion. pgcrypto is available on RDS; the bootstrap
# (`loginvault bootstrap`, as the master user) creates it with the roles and schemas.

resource "aws_db_subnet_group" "loginvault" {
  name        = var.name_prefix
  description = "${var.name_prefix}: private subnets of the database"
  subnet_ids  = var.private_subnet_ids
}

resource "aws_security_group" "db" {
  name        = "${var.name_prefix}-db"
  description = "${var.name_prefix}: PostgreSQL, reachable from the given client security groups only"
  vpc_id      = var.vpc_id
}

resource "aws_vpc_security_group_ingress_rule" "db_clients" {
  for_each = toset(var.db_client_security_group_ids)

  security_group_id            = aws_security_group.db.id
  referenced_security_group_id = each.value
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  description                  = "PostgreSQL from ${each.value}"
}

resource "aws_db_parameter_group" "loginvault" {
  name        = "${var.name_prefix}-postgres15"
  family      = "postgres15"
  description = "${var.name_prefix}: TLS only"

  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }

  # Log slow statements, never all of them (the PII keys travel as session settings, not in SQL,
  # but statements carry cleartext values from raw).
  parameter {
    name  = "log_min_duration_statement"
    value = "5000"
  }

  # …and never their bind parameters: a slow recovery lookup or erasure would otherwise write the
  # looked-up value or the erased user id into the server log (and CloudWatch), beside its statement.
  parameter {
    name  = "log_parameter_max_length"
    value = "0"
  }

  parameter {
    name  = "log_parameter_max_length_on_error"
    value = "0"
  }
}

resource "aws_db_instance" "loginvault" {
  identifier     = var.name_prefix
  engine         = "postgres"
  engine_version = var.db_engine_version
  instance_class = var.db_instance_class
  db_name        = "loginvault"
  username       = "loginvault_admin"

  # RDS keeps the master password in Secrets Manager (output db_master_user_secret_arn), encrypted
  # with the data key: it is never in the Terraform state.
  manage_master_user_password   = true
  master_user_secret_kms_key_id = aws_kms_key.data.arn

  allocated_storage     = var.db_allocated_storage
  max_allocated_storage = var.db_max_allocated_storage
  storage_type          = "gp3"
  storage_encrypted     = true
  kms_key_id            = aws_kms_key.data.arn

  db_subnet_group_name   = aws_db_subnet_group.loginvault.name
  vpc_security_group_ids = [aws_security_group.db.id]
  publicly_accessible    = false
  multi_az               = var.db_multi_az
  parameter_group_name   = aws_db_parameter_group.loginvault.name

  backup_retention_period   = var.db_backup_retention_days
  backup_window             = "03:00-04:00"
  maintenance_window        = "sun:04:30-sun:05:30"
  copy_tags_to_snapshot     = true
  delete_automated_backups  = false
  deletion_protection       = true
  skip_final_snapshot       = false
  final_snapshot_identifier = "${var.name_prefix}-final"

  auto_minor_version_upgrade      = true
  performance_insights_enabled    = true
  performance_insights_kms_key_id = aws_kms_key.data.arn
  enabled_cloudwatch_logs_exports = ["postgresql"]
}
