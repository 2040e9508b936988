terraform {
  # 1.11: write-only arguments, so that the PII keys never enter the state (secrets.tf).
  required_version = ">= 1.11.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.100"
    }
  }

  # The state holds no key, but it maps the whole deployment: keep it in an encrypted,
  # access-controlled backend, e.g.
  # backend "s3" {
  #   bucket       = "my-terraform-state"
  #   key          = "loginvault/terraform.tfstate"
  #   region       = "us-east-1"
  #   encrypt      = true
  #   use_lockfile = true
  # }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = merge({ Project = "loginvault" }, var.tags)
  }
}
