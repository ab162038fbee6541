package loopback

import "testing"

func TestSources(t *testing.T) {
	a, err := Sources("127.0.66.254", 3)
	if err != nil || len(a) != 3 || a[0].String() != "127.0.66.254" || a[2].String() != "127.0.67.0" {
		t.Errorf("got %v, %v", a, err)
	}
	for _, bad := range []struct {
		from string
		n    int
	}{{"192.0.2.1", 1}, {"127.255.255.255", 2}, {"127.0.0.1", 0}, {"nonsense", 1}} {
		if _, err := Sources(bad.from, bad.n); err == nil {
			t.Errorf("-from %s -sources %d: no error", bad.from, bad.n)
		}
	}
}
