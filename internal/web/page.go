package web

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"net/http"
	"strings"
)

// page is the live web page: one file, no external assets, so it works
// offline and on a phone. It reads the JSON API.
//
//go:embed index.html
var page []byte

// pageCSP lets the page run its own inline script and style, by their
// hashes, and fetch from its own origin; nothing else: no other script
// (not even one slipped into the HTML it builds), no image, frame or form
// target, and no page may frame it.
var pageCSP = strings.Join([]string{
	"default-src 'none'",
	"script-src " + inlineHashes(page, "<script>", "</script>"),
	"style-src " + inlineHashes(page, "<style>", "</style>"),
	"connect-src 'self'",
	"base-uri 'none'",
	"form-action 'none'",
	"frame-ancestors 'none'",
}, "; ")

// inlineHashes returns the CSP hash source of each element of html between
// start and end: 'sha256-…' of its text, exactly as written.
func inlineHashes(html []byte, start, end string) string {
	var srcs []string
	for rest := html; ; {
		_, after, ok := bytes.Cut(rest, []byte(start))
		if !ok {
			break
		}
		body, after, _ := bytes.Cut(after, []byte(end))
		sum := sha256.Sum256(body)
		srcs = append(srcs, "'sha256-"+base64.StdEncoding.EncodeToString(sum[:])+"'")
		rest = after
	}
	if len(srcs) == 0 {
		return "'none'"
	}
	return strings.Join(srcs, " ")
}

func pageHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Content-Security-Policy", pageCSP)
		w.Write(page)
	})
}
