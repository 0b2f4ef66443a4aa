replicate {
  trainer     = "ostris/flux-dev-lora-trainer:abc"
  destinaton  = "acme/ana-lora" # ERROR: Did you mean "destination"?
  hardware    = "gpu-t4"
}

stage "work" "lora" {
  images = ["a.jpg"]
}
