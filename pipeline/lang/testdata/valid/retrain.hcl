# The SPEC example, with the test kinds: check ~ image_check, work ~ train, gate ~ loss_gate.
variable "subjects" {
  type    = set(string)
  default = ["alice", "bob"]
}

variable "steps" {
  type    = number
  default = 1000

  validation {
    condition     = var.steps >= 100
    error_message = "steps must be at least 100."
  }
}

variable "hf_token" {
  type      = string
  default   = ""
  sensitive = true
}

locals {
  prefix = "acme"
  model  = "${local.prefix}/${each.key}-lora"
}

batch {
  for_each = var.subjects
}

replicate {
  trainer     = "ostris/flux-dev-lora-trainer:abc"
  destination = local.model
}

stage "check" "photos" {
  dir       = "files/photos"
  min_count = 2
}

stage "work" "lora" {
  images   = check.photos.accepted
  steps    = var.steps
  hf_token = var.hf_token
  input = merge({ lora_rank = 16 }, { trigger_word = "TOK", count = check.photos.count })

  rule "tiny" {
    when      = check.photos.count < 10
    lora_rank = 8
  }

  limit "steps" {
    min = 500
    max = 2000
  }
}

stage "gate" "fit" {
  training = work.lora
}

stage "check" "after" {
  dir        = "files/photos"
  depends_on = [gate.fit]
}

output "version" {
  value = work.lora.version
}
