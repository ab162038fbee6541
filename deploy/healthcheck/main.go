// Command healthcheck is the container image's HEALTHCHECK: it GETs
// phonehome's /healthz and exits 0 on 200, 1 otherwise. The runtime image is
// distroless (no shell, curl or wget), and phonehome has no such
// subcommand, so this is a second static binary of about 2 MB.
//
//	healthcheck [-url http://127.0.0.1:8053/healthz] [-timeout 3s]
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stderr))
}

func run(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("healthcheck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := fs.String("url", "http://127.0.0.1:8053/healthz", "the URL to GET")
	timeout := fs.Duration("timeout", 3*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if err := check(*url, *timeout); err != nil {
		fmt.Fprintln(stderr, "healthcheck:", err)
		return 1
	}
	return 0
}

// check GETs url over plain HTTP/1.0 and wants status 200. It speaks
// just enough HTTP itself (net/http would make it 6 MB, not 2) and ignores
// proxy variables: the target is always phonehome itself.
func check(rawURL string, timeout time.Duration) error {
	u, err := url.Parse(rawURL)
	if err != nil {
		return err
	}
	if u.Scheme != "http" || u.Host == "" {
		return fmt.Errorf("%q: want http://host:port/path", rawURL)
	}
	host := u.Host
	if u.Port() == "" {
		host = net.JoinHostPort(u.Hostname(), "80")
	}
	conn, err := net.DialTimeout("tcp", host, timeout)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: phonehome-healthcheck\r\n\r\n", u.RequestURI(), u.Host); err != nil {
		return err
	}
	status, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("GET %s: reading the status line: %w", rawURL, err)
	}
	// "HTTP/1.1 200 OK"
	proto, rest, _ := strings.Cut(strings.TrimSpace(status), " ")
	code, _, _ := strings.Cut(rest, " ")
	if !strings.HasPrefix(proto, "HTTP/") || code != "200" {
		return fmt.Errorf("GET %s: %s", rawURL, strings.TrimSpace(status))
	}
	return nil
}
