package b

import _ "github.com/kiln-ci/kiln/services/a"
