# login-queue and its dead-letter queue, as the local stack creates them (ingest/consumer/sqs.py: ensure_queues):
# redrive after 5 receives, so a message the database keeps refusing ends in the DLQ
# (`loginvault dlq`, docs/operations.md) instead of being retried forever.

resource "aws_sqs_queue" "login_dlq" {
  name                              = "${var.queue_name}-dlq"
  message_retention_seconds         = var.message_retention_seconds
  kms_master_key_id                 = aws_kms_key.sqs.arn
  kms_data_key_reuse_period_seconds = 300
}

resource "aws_sqs_queue" "login" {
  name                              = var.queue_name
  visibility_timeout_seconds        = var.visibility_timeout_seconds
  message_retention_seconds         = var.message_retention_seconds
  receive_wait_time_seconds         = 20
  kms_master_key_id                 = aws_kms_key.sqs.arn
  kms_data_key_reuse_period_seconds = 300

  redrive_policy = jsonencode({
    deadLetterTargetArn = aws_sqs_queue.login_dlq.arn
    maxReceiveCount     = 5 # ingest/config.py DLQ_MAX_RECEIVE_COUNT
  })
}

# Only login-queue may dead-letter into the DLQ.
resource "aws_sqs_queue_redrive_allow_policy" "login_dlq" {
  queue_url = aws_sqs_queue.login_dlq.id

  redrive_allow_policy = jsonencode({
    redrivePermission = "byQueue"
    sourceQueueArns   = [aws_sqs_queue.login.arn]
  })
}

# TLS only, on both queues.
data "aws_iam_policy_document" "queue_tls_only" {
  for_each = {
    login     = aws_sqs_queue.login.arn
    login_dlq = aws_sqs_queue.login_dlq.arn
  }

  statement {
    sid       = "DenyInsecureTransport"
    effect    = "Deny"
    actions   = ["sqs:*"]
    resources = [each.value]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_sqs_queue_policy" "login" {
  queue_url = aws_sqs_queue.login.id
  policy    = data.aws_iam_policy_document.queue_tls_only["login"].json
}

resource "aws_sqs_queue_policy" "login_dlq" {
  queue_url = aws_sqs_queue.login_dlq.id
  policy    = data.aws_iam_policy_document.queue_tls_only["login_dlq"].json
}
