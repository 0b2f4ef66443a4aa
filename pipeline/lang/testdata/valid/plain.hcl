# No batch, no variables: only literals, functions and relative paths.
stage "check" "photos" {
  dir      = "../files/photos"
  patterns = sort(concat(["*.png"], ["*.jpg"]))
  exposure = { max_dark = 0.5, max_bright = 0.5 }
}

stage "work" "lora" {
  images = [for f in fileset("../files/photos", "**/*.jpg") : "../files/photos/${f}"]
  label  = upper(trimspace(file("../files/label.txt")))
  input  = jsondecode(file("../files/input.json"))
  note   = templatefile("../files/note.tpl", { name = "ana", steps = 1000 })
}

output "count" {
  value = check.photos.count
}

output "files" {
  value = fileset("../files/photos", "**")
}
