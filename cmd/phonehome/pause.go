package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/phonehome/phonehome/internal/web"
)

// runPause asks a running phonehome to log instead of sinkhole for a while:
// phonehome pause 15m [-category telemetry].
func runPause(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("phonehome pause", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("http", web.DefaultHTTP, "the running phonehome's http address")
	token := fs.String("token", "", "its http_token, if it has one")
	cats := fs.String("category", "", "pause only these categories, comma-separated (default: all)")
	reason := fs.String("reason", "", "why, for whoever looks (the page, the other instances of a fleet)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: phonehome pause DURATION [-category a,b] [-reason TEXT] [-http ADDR] [-token T]")
		fmt.Fprintln(stderr, "\nTurns sinkholing into logging for DURATION (such as 15m) in a running phonehome,")
		fmt.Fprintln(stderr, "and in every instance that shares its database (history.dsn).")
		fs.PrintDefaults()
	}
	// The duration may come before the flags.
	var dur string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		dur, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return helpCode(err)
	}
	if dur == "" && fs.NArg() == 1 {
		dur = fs.Arg(0)
	}
	if _, err := time.ParseDuration(dur); err != nil {
		fs.Usage()
		return 2
	}
	req := web.PauseRequest{Duration: dur, Reason: *reason}
	for _, c := range strings.Split(*cats, ",") {
		if c = strings.TrimSpace(c); c != "" {
			req.Categories = append(req.Categories, c)
		}
	}
	// An http address without a host (":8053", as in the config) is this
	// machine; phonehome answers only to IP addresses and names it knows.
	target := *addr
	if host, port, err := net.SplitHostPort(target); err == nil && host == "" {
		target = net.JoinHostPort("127.0.0.1", port)
	}
	body, _ := json.Marshal(req)
	hr, _ := http.NewRequest("POST", "http://"+target+"/api/pause", bytes.NewReader(body))
	hr.Header.Set("Content-Type", "application/json")
	if *token != "" {
		hr.Header.Set("Authorization", "Bearer "+*token)
	}
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(hr)
	if err != nil {
		fmt.Fprintf(stderr, "phonehome pause: %v\n", err)
		return 1
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		fmt.Fprintf(stderr, "phonehome pause: %s: %s", resp.Status, out)
		return 1
	}
	fmt.Fprintf(stdout, "paused for %s\n", dur)
	// Paused there, but not shared with the other instances (yet).
	var reply struct {
		Warning string `json:"warning"`
	}
	if json.Unmarshal(out, &reply) == nil && reply.Warning != "" {
		fmt.Fprintf(stderr, "phonehome pause: %s\n", reply.Warning)
	}
	return 0
}
