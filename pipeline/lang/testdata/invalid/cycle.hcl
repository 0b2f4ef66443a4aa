stage "work" "a" {
  images = check.c.accepted # ERROR: Dependency cycle: work.a → check.c → gate.b → work.a
  steps  = gate.b.passed ? 1 : 2 # ERROR: Dependency cycle: work.a → gate.b → work.a
}

stage "gate" "b" {
  training = work.a
}

stage "check" "c" {
  dir        = "x"
  depends_on = [gate.b]
}

stage "gate" "d" {
  training = gate.e # ERROR: Dependency cycle: gate.d → gate.e → gate.d
}

stage "gate" "e" {
  training = gate.d
}
