variable "n" {
  type    = nmber # ERROR: The keyword "nmber" is not a valid type specification
}

variable "steps" {
  type    = number
  default = "lots" # ERROR: The default of variable "steps" does not match its type number
}

variable "other" {
  type = string

  validation {
    condition     = var.steps > 1 # ERROR: can only refer to var.other itself
    error_message = "nope"
  }
}

variable "bad name!" { # ERROR: Invalid variable name
}

variable "mode" {
  type = string
  sensitive = "maybe" # ERROR: sensitive must be true or false
}
