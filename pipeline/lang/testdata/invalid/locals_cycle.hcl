locals {
  a = local.b # ERROR: Cycle between local values
  b = local.a
  c = foo.bar # ERROR: There is no "foo"
}
