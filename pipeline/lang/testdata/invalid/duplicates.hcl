variable "x" {
}

variable "x" { # ERROR: Duplicate variable "x"
}

locals {
  a = 1
}

locals {
  a = 2 # ERROR: Duplicate local value "a"
}

output "o" {
  value = 1
}

output "o" { # ERROR: Duplicate output "o"
  value = 2
}

batch {
  for_each = ["a"]
}

batch { # ERROR: at most one batch block
  for_each = ["b"]
}

replicate {
  trainer = "a"
}

replicate { # ERROR: at most one replicate block
  trainer = "b"
}

state {
  url = "mem://"
}

state { # ERROR: at most one state block
  url = "mem://x"
}
