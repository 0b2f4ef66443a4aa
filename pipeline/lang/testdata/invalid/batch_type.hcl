batch {
  for_each = 42 # ERROR: for_each must be a set or list of strings, or a map
}
