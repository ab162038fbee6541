package main

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestRun(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz":
			w.Write([]byte("ok\n"))
		case "/slow":
			time.Sleep(time.Second)
		default:
			http.Error(w, "down", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()

	// A port nothing listens on.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String() + "/healthz"
	l.Close()

	// A server that answers with something other than HTTP.
	g, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	go func() {
		for {
			c, err := g.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("SSH-2.0-OpenSSH_9.2\r\n"))
			c.Close()
		}
	}()
	garbage := g.Addr().String()

	for _, tc := range []struct {
		name    string
		args    []string
		want    int
		wantErr string
	}{
		{"healthy", []string{"-url", srv.URL + "/healthz"}, 0, ""},
		{"503", []string{"-url", srv.URL + "/readyz"}, 1, "503"},
		{"timeout", []string{"-url", srv.URL + "/slow", "-timeout", "100ms"}, 1, "timeout"},
		{"not http", []string{"-url", "https://127.0.0.1:1/healthz"}, 1, "want http"},
		{"not a server", []string{"-url", "http://" + garbage + "/"}, 1, "GET"},
		{"refused", []string{"-url", closed}, 1, "refused"},
		{"bad flag", []string{"-nope"}, 2, "-nope"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stderr bytes.Buffer
			if got := run(tc.args, &stderr); got != tc.want {
				t.Errorf("run(%q) = %d, want %d; stderr: %s", tc.args, got, tc.want, &stderr)
			}
			if !strings.Contains(stderr.String(), tc.wantErr) {
				t.Errorf("stderr %q does not mention %q", &stderr, tc.wantErr)
			}
		})
	}
}
