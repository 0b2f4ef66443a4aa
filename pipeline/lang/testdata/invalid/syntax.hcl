stage "check" "photos" {
  dir = "a" "b" # ERROR: An argument definition must end with a newline
  min_count = "x"
}
