# The ingest's role (IRSA: assumed by the loginvault-ingest ServiceAccount only) and what it may do:
# consume login-queue, nothing else. ReceiveMessage with WaitTimeSeconds (long poll), DeleteMessage
# (which also authorizes DeleteMessageBatch), ChangeMessageVisibility (also authorizes
# ChangeMessageVisibilityBatch: the visibility keeper and the release at a stop), GetQueueAttributes
# (the pre-flight check and the queue depth gauge), GetQueueUrl; kms:Decrypt to read SSE-KMS
# messages. On the dead-letter queue only GetQueueUrl and GetQueueAttributes: the depth gauge
# (loginvault_dlq_messages) that the DLQ alert watches; no message. Not SendMessage: redriving is an
# operator's action (docs/operations.md).

locals {
  # oidc.eks.<region>.amazonaws.com/id/<ID>, the prefix of the OIDC claims in the trust policy.
  oidc_issuer = element(split("oidc-provider/", var.eks_oidc_provider_arn), 1)
}

data "aws_iam_policy_document" "ingest_trust" {
  statement {
    sid     = "IngestServiceAccount"
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [var.eks_oidc_provider_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:sub"
      values   = ["system:serviceaccount:${var.k8s_namespace}:${var.ingest_service_account}"]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "ingest" {
  name                 = "${var.name_prefix}-ingest"
  description          = "loginvault ingest: consume ${var.queue_name}"
  assume_role_policy   = data.aws_iam_policy_document.ingest_trust.json
  max_session_duration = 3600
}

data "aws_iam_policy_document" "ingest" {
  statement {
    sid = "ConsumeLoginQueue"
    actions = [
      "sqs:ReceiveMessage",
      "sqs:DeleteMessage",
      "sqs:ChangeMessageVisibility",
      "sqs:GetQueueAttributes",
      "sqs:GetQueueUrl",
    ]
    resources = [aws_sqs_queue.login.arn]
  }

  statement {
    sid = "ReadDeadLetterQueueDepth"
    actions = [
      "sqs:GetQueueAttributes",
      "sqs:GetQueueUrl",
    ]
    resources = [aws_sqs_queue.login_dlq.arn]
  }

  statement {
    sid       = "DecryptLoginQueueMessages"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.sqs.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = ["sqs.${var.region}.amazonaws.com"]
    }
  }
}

resource "aws_iam_policy" "ingest" {
  name        = "${var.name_prefix}-ingest"
  description = "loginvault ingest: receive, delete and change the visibility of ${var.queue_name}'s messages"
  policy      = data.aws_iam_policy_document.ingest.json
}

resource "aws_iam_role_policy_attachment" "ingest" {
  role       = aws_iam_role.ingest.name
  policy_arn = aws_iam_policy.ingest.arn
}

# KEDA's scaler (deploy/k8s/keda.yaml, TriggerAuthentication roleArn): the KEDA operator assumes
# this role to read the queue's depth, and can do nothing else with the queue.
data "aws_iam_policy_document" "keda_scaler_trust" {
  count = var.keda_operator_role_arn == null ? 0 : 1

  statement {
    sid     = "KedaOperator"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "AWS"
      identifiers = [var.keda_operator_role_arn]
    }
  }
}

resource "aws_iam_role" "keda_scaler" {
  count = var.keda_operator_role_arn == null ? 0 : 1

  name               = "${var.name_prefix}-keda-scaler"
  description        = "KEDA: read the depth of ${var.queue_name}"
  assume_role_policy = data.aws_iam_policy_document.keda_scaler_trust[0].json
}

data "aws_iam_policy_document" "keda_scaler" {
  statement {
    sid       = "ReadLoginQueueDepth"
    actions   = ["sqs:GetQueueAttributes"]
    resources = [aws_sqs_queue.login.arn]
  }
}

resource "aws_iam_role_policy" "keda_scaler" {
  count = var.keda_operator_role_arn == null ? 0 : 1

  name   = "read-queue-depth"
  role   = aws_iam_role.keda_scaler[0].id
  policy = data.aws_iam_policy_document.keda_scaler.json
}
