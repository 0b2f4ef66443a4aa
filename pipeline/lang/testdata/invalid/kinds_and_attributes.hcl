stage "chek" "photos" { # ERROR: Did you mean "check"?
  dir = "x"
}

stage "check" "raw" { # ERROR: Missing required argument
  dri = "data" # ERROR: Did you mean "dir"?
}

stage "work" "lora" {
  images = ["a.jpg"]

  rules "tiny" { # ERROR: Blocks of type "rules" are not expected here. Did you mean "rule"?
  }

  defaults {
  }
  defaults { # ERROR: Only one defaults block is allowed here
  }

  limit "steps" {
    minn = 3 # ERROR: Did you mean "min"?
  }
}

stage "check" "raw" { # ERROR: Duplicate stage "check.raw"
  dir = "y"
}

resource "x" "y" { # ERROR: Unsupported block type
}

stage "check" "listed" {
  dir   = "d"
  bogus = 1 # ERROR: The attributes accepted here are: dir, exposure, min_count, patterns.

  limit "x" { # ERROR: No nested blocks are accepted here.
  }
}
