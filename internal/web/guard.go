package web

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

// maxBody bounds the body of every POST; the largest, a pause, is a few
// hundred bytes.
const maxBody = 1 << 16

// The reasons of phonehome_http_refused_total, one per rule a request can
// break; the label set is this list and nothing else.
const (
	refusedHost        = "host"         // Host is not an IP address, localhost or a name in http_hosts
	refusedMethod      = "method"       // not GET, HEAD or POST, or not the route's (a CORS preflight is OPTIONS)
	refusedOrigin      = "origin"       // a POST a browser sent from another origin
	refusedContentType = "content_type" // a POST that is not application/json
	refusedSize        = "size"         // a POST body over maxBody
	refusedAccess      = "access"       // a POST from outside access.allow
	refusedToken       = "token"        // a POST without http_token, when it is set
)

var refusedReasons = []string{refusedHost, refusedMethod, refusedOrigin, refusedContentType, refusedSize, refusedAccess, refusedToken}

func newRefusedMetric(reg prometheus.Registerer) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "phonehome_http_refused_total",
		Help: "HTTP requests refused, by the rule they broke: host, method, origin, content_type, size, access, token.",
	}, []string{"reason"})
	for _, r := range refusedReasons {
		c.WithLabelValues(r)
	}
	reg.MustRegister(c)
	return c
}

// refuse answers a request that broke a rule, and counts it.
func (a *API) refuse(w http.ResponseWriter, reason string, code int, format string, args ...any) {
	a.refused.WithLabelValues(reason).Inc()
	http.Error(w, fmt.Sprintf(format, args...), code)
}

// filter runs before every route: it sets the headers every answer has,
// and turns away what only another web site or a rebound name would send,
// so that no handler sees it. What each step stops:
//
//  1. Host: DNS rebinding. A page on attacker.example whose name
//     re-resolves to this address is same-origin with it in the browser's
//     eyes; its requests still say Host: attacker.example.
//  2. Method: only GET, HEAD and POST. A CORS preflight (OPTIONS) is
//     refused and no answer carries Access-Control-Allow-*, so a browser
//     never lets another origin read an answer or send a JSON POST.
//  3. Origin and Sec-Fetch-Site: a POST a browser sent from another
//     origin, such as a form or a no-cors fetch ("simple" requests that
//     need no preflight).
//  4. Content-Type: a POST must say application/json, which no simple
//     request can; the body is bounded.
//
// Who may change things (access.allow, http_token) is checked per route,
// by guard.
func (a *API) filter(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		if !a.hostAllowed(r.Host) {
			a.refuse(w, refusedHost, http.StatusMisdirectedRequest,
				"misdirected request: Host %q is not an IP address, localhost or a name in http_hosts\n", r.Host)
			return
		}
		switch r.Method {
		case http.MethodGet, http.MethodHead:
		case http.MethodPost:
			if err := sameOrigin(r); err != nil {
				a.refuse(w, refusedOrigin, http.StatusForbidden, "forbidden: %v\n", err)
				return
			}
			if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
				a.refuse(w, refusedContentType, http.StatusUnsupportedMediaType, "unsupported media type: POST needs Content-Type: application/json\n")
				return
			}
			if r.ContentLength > maxBody {
				a.refuse(w, refusedSize, http.StatusRequestEntityTooLarge, "request body over %d bytes\n", maxBody)
				return
			}
			r.Body = http.MaxBytesReader(w, r.Body, maxBody)
		default:
			h.Set("Allow", "GET, HEAD, POST")
			a.refuse(w, refusedMethod, http.StatusMethodNotAllowed, "method not allowed\n")
			return
		}
		// The mux answers 405 itself for a route's other method (GET
		// /api/pause): count those too.
		cw := &codeWriter{ResponseWriter: w}
		next.ServeHTTP(cw, r)
		if cw.code == http.StatusMethodNotAllowed {
			a.refused.WithLabelValues(refusedMethod).Inc()
		}
	})
}

// codeWriter remembers the status code a handler wrote.
type codeWriter struct {
	http.ResponseWriter
	code int
}

func (w *codeWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *codeWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// hostAllowed reports whether a request's Host (with or without a port) is
// an IP address, localhost or a name in http_hosts. A name re-resolved by
// someone else's DNS is none of these.
func (a *API) hostAllowed(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if host == "" {
		return false // HTTP/1.0 without Host: not a browser, but not known either
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	name := normalHost(host)
	return name == "localhost" || (*a.hosts.Load())[name]
}

// normalHost is a host name as Host headers and http_hosts are compared:
// lower case, without a final dot.
func normalHost(s string) string { return strings.TrimSuffix(strings.ToLower(s), ".") }

// sameOrigin returns why a POST came from another origin, if a browser
// says it did. Like net/http's CrossOriginProtection, it trusts
// Sec-Fetch-Site (cross-site and same-site are other origins) and, when
// there is an Origin, wants it to name the request's own Host; unlike it,
// it checks Origin even when Sec-Fetch-Site says same-origin, and refuses
// "Origin: null" (sandboxed frames, file: pages). No Origin and no
// Sec-Fetch-Site is a program (curl, phonehome pause), not a browser.
func sameOrigin(r *http.Request) error {
	switch site := r.Header.Get("Sec-Fetch-Site"); site {
	case "cross-site", "same-site":
		return fmt.Errorf("Sec-Fetch-Site: %s; the API takes changes from its own page and from programs, not from other web sites", site)
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return nil
	}
	u, err := url.Parse(origin)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || !strings.EqualFold(u.Host, r.Host) {
		return fmt.Errorf("Origin %q is not this server (%s); the API takes changes from its own page and from programs, not from other web sites", origin, r.Host)
	}
	return nil
}

// guard lets a state-changing request through only from an address in
// access.allow and, when http_token is set, with the token
// ("Authorization: Bearer TOKEN", compared in constant time).
func (a *API) guard(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		ip, err := netip.ParseAddr(host)
		if err != nil || !a.resolver.State().Allowed(ip) {
			a.refuse(w, refusedAccess, http.StatusForbidden, "forbidden: not an address in access.allow\n")
			return
		}
		if token := *a.token.Load(); token != "" {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(token)) != 1 {
				a.refuse(w, refusedToken, http.StatusUnauthorized, "unauthorized: this needs http_token as Authorization: Bearer TOKEN\n")
				return
			}
		}
		next(w, r)
	}
}

// tooLarge reports whether err is a read past maxBody.
func tooLarge(err error) bool {
	var e *http.MaxBytesError
	return errors.As(err, &e)
}
