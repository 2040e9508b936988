# Two customer-managed keys, rotated yearly: one for the queue's messages (the ingest may decrypt
# with it), one for data at rest that the ingest never reads (RDS storage, the PII keys in
# Secrets Manager, RDS's master password).

data "aws_caller_identity" "current" {}

data "aws_partition" "current" {}

locals {
  account_root = "arn:${data.aws_partition.current.partition}:iam::${data.aws_caller_identity.current.account_id}:root"
}

data "aws_iam_policy_document" "kms_key" {
  # The account's IAM policies decide who uses the keys (least privilege there: iam.tf). Without
  # this statement a key whose policy locks everyone out cannot be managed at all.
  statement {
    sid       = "AccountIamPolicies"
    actions   = ["kms:*"]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = [local.account_root]
    }
  }

  dynamic "statement" {
    for_each = length(var.kms_key_admin_arns) > 0 ? [1] : []

    content {
      sid = "KeyAdministrators"
      actions = [
        "kms:CancelKeyDeletion",
        "kms:Create*",
        "kms:Delete*",
        "kms:Describe*",
        "kms:Disable*",
        "kms:Enable*",
        "kms:Get*",
        "kms:List*",
        "kms:Put*",
        "kms:Revoke*",
        "kms:ScheduleKeyDeletion",
        "kms:TagResource",
        "kms:UntagResource",
        "kms:Update*",
      ]
      resources = ["*"]

      principals {
        type        = "AWS"
        identifiers = var.kms_key_admin_arns
      }
    }
  }
}

resource "aws_kms_key" "sqs" {
  description             = "${var.name_prefix}: SSE of ${var.queue_name} and its dead-letter queue"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms_key.json
}

resource "aws_kms_alias" "sqs" {
  name          = "alias/${var.name_prefix}-sqs"
  target_key_id = aws_kms_key.sqs.key_id
}

resource "aws_kms_key" "data" {
  description             = "${var.name_prefix}: RDS storage, PII keys and master password in Secrets Manager"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms_key.json
}

resource "aws_kms_alias" "data" {
  name          = "alias/${var.name_prefix}-data"
  target_key_id = aws_kms_key.data.key_id
}
