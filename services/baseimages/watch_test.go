package baseimages

import "os"

func init() {
	if p := os.Getenv("KILN_BASEIMAGES_LOG"); p != "" {
		f, err := os.Create(p)
		if err == nil {
			buildLog = f
		}
	}
}
