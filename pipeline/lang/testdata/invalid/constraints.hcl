variable "mode" {
  type    = string
  default = "warn"
}

stage "work" "ok" {
  images = ["a.jpg"]
  mode   = var.mode
  poll   = "30s"
  keep   = 3
}

stage "work" "bad" {
  images = ["a.jpg"]
  mode   = "wran" # ERROR: Did you mean "warn"?
  poll   = "soon" # ERROR: is not a positive duration
  keep   = 0      # ERROR: is below its minimum 1
}

stage "work" "high" {
  images = ["a.jpg"]
  keep   = 11 # ERROR: is above its maximum 10
}

stage "check" "photos" {
  dir = "x"
}

stage "work" "src_ok" {
  images = ["a.jpg"]
  source = check.photos
}

stage "work" "src_output" {
  images = ["a.jpg"]
  source = check.photos.count # ERROR: must name a whole check stage
}

stage "work" "src_kind" {
  images = ["a.jpg"]
  source = work.src_ok # ERROR: must name a whole check stage
}
