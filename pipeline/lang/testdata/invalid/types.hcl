variable "names" {
  type = list(string)
}

variable "label" {
  type = string
}

stage "check" "photos" {
  dir       = "photos"
  min_count = "many"                        # ERROR: a number is required
  patterns  = var.names                     # fine: list(string)
  exposure  = { max_dark = "x", max_bright = 1 } # ERROR: a number is required
}

stage "work" "lora" {
  images = check.photos.count # ERROR: list of string required
  steps  = var.names          # ERROR: number required
  label  = var.label
  input  = check.photos.accepted
  note   = upper(check.photos.count)

  limit "steps" {
    min = true # ERROR: number required
  }
}

stage "gate" "fit" {
  training = null # ERROR: Attribute "training" is required and must not be null
}

output "bad" {
  value = nofunc(1) # ERROR: Call to unknown function
}
