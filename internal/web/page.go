package web

import (
	_ "embed"
	"net/http"
)

// page is the live web page: one file, no external assets, so it works
// offline and on a phone. It reads the JSON API.
//
//go:embed index.html
var page []byte

func pageHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'")
		w.Write(page)
	})
}
