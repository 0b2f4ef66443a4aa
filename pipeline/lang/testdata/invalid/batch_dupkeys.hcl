batch {
  for_each = ["ana", "bo", "ana"] # ERROR: The batch key "ana" appears twice
}
