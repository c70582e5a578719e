package b

import _ "github.com/kiln-ci/kiln/current"
