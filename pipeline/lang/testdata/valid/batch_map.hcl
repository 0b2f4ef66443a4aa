# A map for_each: each.value is the element.
variable "people" {
  type = map(object({ steps = number }))
  default = {
    ana = { steps = 1000 }
    bo  = { steps = 1200 }
  }
}

batch {
  for_each = var.people
}

stage "check" "photos" {
  dir = "data/${each.key}"
}

stage "work" "lora" {
  images = check.photos.accepted
  steps  = each.value.steps
}

state {
  url = "file:///tmp/pipeline-state"
}
