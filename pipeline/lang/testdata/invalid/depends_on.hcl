stage "gate" "a" {
  training   = work.lora
  depends_on = [
    gate.missing, # ERROR: depends_on names gate.missing, which is not declared
    bogus.thing,  # ERROR: bogus.thing is not a stage address
    gate.a,       # ERROR: lists itself in depends_on
  ]
}

stage "work" "lora" {
  images     = []
  depends_on = "gate.a" # ERROR: depends_on must be a list of stage addresses
}
