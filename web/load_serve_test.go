package web

import (
	"net"
	"net/http"
)

// loadHTTPServer serves the console of TestLoadServer as kiln serve does.
func loadHTTPServer(s *Server, ln net.Listener) (*http.Server, net.Listener) {
	return s.HTTPServer(ln, ServeOptions{})
}
