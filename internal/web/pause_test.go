package web

import (
	"encoding/json"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/phonehome/phonehome/resolver"
)

// TestWithPause: with WithPause, pause and resume go through its function
// (the fleet's), which applies them; its error is the answer's warning,
// and the answer shows the pause in force with its reason and instance.
func TestWithPause(t *testing.T) {
	a, _ := newTestAPI(t, Config{})
	var got []*resolver.Pause
	shared := errors.New("applied on this instance only: the shared database is unreachable")
	WithPause(func(p *resolver.Pause) error {
		got = append(got, p)
		if p != nil {
			c := *p
			c.By = "dns1"
			a.resolver.SetPause(&c)
		} else {
			a.resolver.SetPause(nil)
		}
		return shared
	})(a)

	w := httptest.NewRecorder()
	a.pause(w, httptest.NewRequest("POST", "/api/pause", strings.NewReader(`{"duration":"15m","categories":["telemetry"],"reason":"a Windows update"}`)))
	var reply struct {
		Paused  *Pause `json:"paused"`
		Warning string `json:"warning"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &reply); err != nil || w.Code != 200 {
		t.Fatalf("%d %s: %v", w.Code, w.Body, err)
	}
	if len(got) != 1 || got[0] == nil || got[0].Reason != "a Windows update" || reply.Paused == nil ||
		reply.Paused.By != "dns1" || reply.Paused.Reason != "a Windows update" || reply.Warning != shared.Error() {
		t.Errorf("pause: %s (set %+v)", w.Body, got)
	}

	h := a.Handler()
	r := httptest.NewRequest("POST", "http://127.0.0.1:8053/api/resume", nil)
	r.RemoteAddr = "192.168.1.5:4000"
	r.Header.Set("Content-Type", "application/json")
	w = httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != 200 || len(got) != 2 || got[1] != nil || a.resolver.Paused() != nil || !strings.Contains(w.Body.String(), `"warning":"applied on this instance only`) {
		t.Errorf("resume: %d %s (set %+v)", w.Code, w.Body, got)
	}

	w = httptest.NewRecorder()
	a.pause(w, httptest.NewRequest("POST", "/api/pause", strings.NewReader(`{"duration":"15m","reason":"`+strings.Repeat("x", 201)+`"}`)))
	if w.Code != 400 || len(got) != 2 {
		t.Errorf("a reason of 201 bytes: %d %s", w.Code, w.Body)
	}
}
