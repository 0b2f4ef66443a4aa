batch {
  for_each = [each.key] # ERROR: for_each defines the batch keys
}

state {
  url = "s3://bucket/${each.key}" # ERROR: cannot use each.key or each.value
}

replicate {
  destination = "acme/${each.key}"
  trainer     = check.photos.count # ERROR: the replicate block cannot refer to a stage
}

stage "check" "photos" {
  dir = each.vaule # ERROR: nothing else is under each
}
