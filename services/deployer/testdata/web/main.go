// Command web is the small service the deployer's tests deploy: it answers / with the
// content of /version and /health with "ok", unless /version says "broken". It
// listens on $PORT (default 8080).
package main

import (
	"net/http"
	"os"
	"strings"
)

func main() {
	v, _ := os.ReadFile("/version")
	version := strings.TrimSpace(string(v))
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(version + "\n")) })
	http.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(version, "broken") {
			http.Error(w, "broken on purpose", http.StatusInternalServerError)
			return
		}
		w.Write([]byte("ok\n"))
	})
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	http.ListenAndServe(":"+port, nil)
}
