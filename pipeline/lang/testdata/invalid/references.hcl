variable "subject" {
  type = string
}

locals {
  dir   = "data/${var.subjetc}" # ERROR: Did you mean "subject"?
  count = check.photos.count    # ERROR: local.count cannot refer to a stage
}

stage "check" "photos" {
  dir = local.dri # ERROR: Did you mean "dir"?
}

stage "work" "lora" {
  images = check.photos.acepted # ERROR: Did you mean "accepted"?
  steps  = check.foto.count     # ERROR: No stage "check.foto" is declared
  label  = each.key             # ERROR: each.key is only available inside a batch
  input  = wrok.lora.version    # ERROR: Did you mean "work"?
  note   = work.lora.version    # ERROR: Stage work.lora refers to itself
}

stage "gate" "fit" {
  training   = work.lora
  depends_on = ["work.lora"] # ERROR: Each depends_on entry must be a stage address
}

stage "gate" "fit2" {
  training   = work.lora
  depends_on = [
    gate.fitt,   # ERROR: Did you mean "gate.fit"?
    bogus.thing, # ERROR: bogus.thing is not a stage address
    gate.fit2,   # ERROR: Stage gate.fit2 lists itself in depends_on
  ]
}

output "v" {
  value = work.lora.versoin # ERROR: Did you mean "version"?
}
