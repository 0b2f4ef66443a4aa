# Retrain each subject's Flux LoRA without the failure modes that make retrains worse:
# check the photos, pick research-backed parameters, train, reject an overfit model,
# test it at portrait-safe guidance against the subject's own skin texture, prune old versions.
#
#   pipeline plan examples/retrain.hcl
#   pipeline apply -simulate -auto-approve examples/retrain.hcl

variable "subjects" {
  type        = list(string)
  default     = ["ana", "ben"]
  description = "Subjects to retrain; each has its photos under data/<subject>."
}

variable "owner" {
  type    = string
  default = "acme"
}

variable "trainer" {
  type    = string
  default = "ostris/flux-dev-lora-trainer:e440909d3512c31646ee2e0c7d6f6f4923224863a6a10c494606e79fb5844497"
}

batch {
  for_each = toset(var.subjects)
}

replicate {
  trainer     = var.trainer
  destination = "${var.owner}/${each.key}-lora"
  hardware    = "gpu-t4"
}

stage "image_check" "photos" {
  dir       = "data/${each.key}"
  min_count = 12
  min_side  = 1024
}

stage "params" "tuned" {
  image_count = image_check.photos.count

  # Small sets overfit fast: keep the rank low and the steps at the bottom of the range.
  rule "small_set" {
    when      = image_check.photos.count < 15
    lora_rank = 8
    steps     = 1000
  }
}

stage "train" "lora" {
  images = image_check.photos.accepted
  input  = merge(params.tuned.values, { trigger_word = "TOK", autocaption = true })
}

stage "loss_gate" "fit" {
  training     = train.lora
  min_loss     = 0.2
  cancel_early = true
}

stage "generate" "check" {
  version   = train.lora.version
  prompts   = ["a close-up portrait photo of TOK, natural window light"]
  seeds     = [1, 2, 3]
  reference = image_check.photos # the subject's own skin texture, for the plastic-skin guard
  gate      = loss_gate.fit      # runs after the gate passed; the report draws its threshold
  params    = params.tuned       # the report lists the chosen parameters and why
  training  = train.lora         # and what the training was actually sent
  out_dir   = "generated/${each.key}"
}

stage "prune" "old" {
  model      = "${var.owner}/${each.key}-lora"
  keep_last  = 3
  depends_on = [generate.check]
}

output "version" {
  value = train.lora.version
}

output "texture_verdict" {
  value = generate.check.verdict
}
