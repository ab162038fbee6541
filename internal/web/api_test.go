package web

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/phonehome/phonehome/policy"
	"github.com/phonehome/phonehome/resolver"
)

// TestAPIGuard: state-changing calls need an address in access.allow and,
// when http_token is set, the token.
func TestAPIGuard(t *testing.T) {
	cfg := &resolver.Config{Listen: []string{"127.0.0.1:0"}, Upstreams: []string{"127.0.0.1:9"},
		Access: resolver.AccessConfig{Allow: []policy.Prefix{{Prefix: netip.MustParsePrefix("192.168.1.0/24")}}}}
	s, err := resolver.New(cfg, resolver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close(context.Background())
	a := NewAPI(s, NewActivity(10, 10, false), nil, "s3cret", nil)
	ok := func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }
	for _, c := range []struct {
		remote, auth string
		want         int
	}{
		{"192.168.1.5:4000", "Bearer s3cret", 200},
		{"192.168.1.5:4000", "", 401},
		{"192.168.1.5:4000", "Bearer wrong", 401},
		{"10.0.0.5:4000", "Bearer s3cret", 403},
		{"[::ffff:192.168.1.5]:4000", "Bearer s3cret", 200},
	} {
		r := httptest.NewRequest("POST", "/api/pause", strings.NewReader("{}"))
		r.RemoteAddr = c.remote
		if c.auth != "" {
			r.Header.Set("Authorization", c.auth)
		}
		w := httptest.NewRecorder()
		a.guard(ok)(w, r)
		if w.Code != c.want {
			t.Errorf("%s %q: %d, want %d", c.remote, c.auth, w.Code, c.want)
		}
	}
	// Bad pause bodies.
	for _, body := range []string{"nope", `{"duration":"forever"}`, `{"duration":"48h"}`} {
		w := httptest.NewRecorder()
		a.pause(w, httptest.NewRequest("POST", "/api/pause", strings.NewReader(body)))
		if w.Code != 400 {
			t.Errorf("%s: %d", body, w.Code)
		}
	}
}
