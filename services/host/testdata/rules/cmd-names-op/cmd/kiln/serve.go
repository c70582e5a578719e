package main

import "github.com/kiln-ci/kiln/services/a"

var _ = a.X

func main() { rebuild("a-build") }
