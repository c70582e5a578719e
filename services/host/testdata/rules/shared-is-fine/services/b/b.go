package b

import (
	_ "github.com/kiln-ci/kiln/services/host"
	_ "github.com/kiln-ci/kiln/services/internal/results"
)
