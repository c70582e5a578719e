package a

import "github.com/kiln-ci/kiln/current"

var build = &current.Op[string, string]{Name: "a-build"}
