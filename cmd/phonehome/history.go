package main

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/phonehome/phonehome/internal/configfile"
	"github.com/phonehome/phonehome/internal/history"
	"github.com/phonehome/phonehome/internal/querylog"
)

// runHistory reads the history file, read-only, beside a running
// phonehome or without one: phonehome history top|new|export [flags].
func runHistory(args []string, stdout, stderr io.Writer) int {
	subs := []struct {
		name, summary string
		run           func(args []string, stdout, stderr io.Writer) int
	}{
		{"top", "the endpoints asked for most, by one machine or all", historyTop},
		{"new", "the endpoints machines asked for the first time", historyNew},
		{"export", "the events or the counts as CSV or JSON lines", historyExport},
	}
	if len(args) > 0 {
		for _, s := range subs {
			if s.name == args[0] {
				return s.run(args[1:], stdout, stderr)
			}
		}
	}
	w := stderr
	if len(args) > 0 && (args[0] == "help" || args[0] == "-h" || args[0] == "-help" || args[0] == "--help") {
		w = stdout
	} else if len(args) > 0 {
		fmt.Fprintf(stderr, "phonehome history: unknown command %q\n\n", args[0])
	}
	fmt.Fprintln(w, "usage: phonehome history <command> [-config FILE | -db PATH | -dsn DSN] [flags]")
	fmt.Fprintln(w, "\ncommands:")
	for _, s := range subs {
		fmt.Fprintf(w, "  %-8s %s\n", s.name, s.summary)
	}
	fmt.Fprintln(w, "\nThe file is history.path of -config FILE, or -db PATH, or the default path (history.db in")
	fmt.Fprintln(w, "$STATE_DIRECTORY, $XDG_STATE_HOME/phonehome or ~/.local/state/phonehome). It is read-only:")
	fmt.Fprintln(w, "reading it beside a running phonehome is fine. With history.dsn in -config, or -dsn, or")
	fmt.Fprintln(w, "$"+history.EnvDSN+", it is the PostgreSQL database that several instances share instead.")
	fmt.Fprintln(w, "\nTimes: "+strings.TrimPrefix(history.TimeSyntax, "want ")+".")
	fmt.Fprintln(w, "Run \"phonehome history <command> -h\" for a command's flags.")
	if w == stdout {
		return 0
	}
	return 2
}

// historyCommand is what the history commands share: their flags, the
// file, and how they fail.
type historyCommand struct {
	name     string
	fs       *flag.FlagSet
	config   string
	db       string
	dsn      string
	stderr   io.Writer
	now      time.Time
	explicit bool // -config or -db named the file
}

func newHistoryCommand(name, usage string, stderr io.Writer) *historyCommand {
	c := &historyCommand{name: "phonehome history " + name, stderr: stderr, now: time.Now()}
	c.fs = flag.NewFlagSet(c.name, flag.ContinueOnError)
	c.fs.SetOutput(stderr)
	c.fs.StringVar(&c.config, "config", "", "the config file whose history.path to read")
	c.fs.StringVar(&c.db, "db", "", "the history file to read (instead of -config)")
	c.fs.StringVar(&c.dsn, "dsn", "", "the shared PostgreSQL history to read, as history.dsn names it (instead of -config or -db; default $"+history.EnvDSN+")")
	c.fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: %s %s\n\n", c.name, usage)
		c.fs.PrintDefaults()
		fmt.Fprintln(stderr, "\nTimes: "+strings.TrimPrefix(history.TimeSyntax, "want ")+".")
	}
	return c
}

// parse reads the flags; it returns an exit code when the command should
// stop.
func (c *historyCommand) parse(args []string) (int, bool) {
	if err := c.fs.Parse(args); err != nil {
		return helpCode(err), false
	}
	if c.fs.NArg() > 0 {
		return c.usageError("unexpected argument %q", c.fs.Arg(0)), false
	}
	return 0, true
}

// usageError says what is wrong with the command line: exit code 2.
func (c *historyCommand) usageError(format string, args ...any) int {
	fmt.Fprintf(c.stderr, "%s: %s\n", c.name, fmt.Sprintf(format, args...))
	return 2
}

// fail reports an error: 2 for a flag the history cannot take, else 1.
func (c *historyCommand) fail(err error) int {
	var pe *history.ParamError
	if errors.As(err, &pe) {
		return c.usageError("-%s", pe.Error())
	}
	fmt.Fprintf(c.stderr, "%s: %v\n", c.name, err)
	return 1
}

// time reads a time flag.
func (c *historyCommand) time(name, v string) (time.Time, error) {
	t, err := history.ParseTime(v, c.now)
	if err != nil {
		return time.Time{}, &history.ParamError{Param: name, Msg: err.Error()}
	}
	return t, nil
}

// client reads the -client flag, spelled as the history spells clients.
func (c *historyCommand) client(v string) (string, error) {
	if v == "" {
		return "", nil
	}
	ip, err := netip.ParseAddr(v)
	if err != nil || ip.Zone() != "" {
		return "", &history.ParamError{Param: "client", Msg: fmt.Sprintf("%q is not an IP address: want a machine's address, such as 192.168.1.23", v)}
	}
	return ip.String(), nil
}

// open opens the history (the file read-only, or the shared database)
// and checks it is a history: the one of -config, -db or -dsn, else the
// shared database of $PHONEHOME_HISTORY_DSN, else the file at the
// default path.
func (c *historyCommand) open(ctx context.Context) (*history.Reader, error) {
	var r *history.Reader
	var err error
	switch given := btoi(c.db != "") + btoi(c.config != "") + btoi(c.dsn != ""); {
	case given > 1:
		return nil, errors.New("give one of -config, -db and -dsn")
	case c.config != "":
		f, lerr := configfile.Load(c.config)
		if lerr != nil {
			return nil, lerr
		}
		if f.History.Off {
			return nil, fmt.Errorf("the history is off in %s (history: off)", c.config)
		}
		r, err = history.NewReader(f.History)
	case c.db != "":
		r, err = history.OpenReader(c.db) // the file, whatever the environment says
	default:
		r, err = history.NewReader(history.Config{DSN: c.dsn})
	}
	if err != nil {
		return nil, err
	}
	if err := r.Check(ctx); err != nil {
		r.Close()
		if c.db == "" && c.config == "" && c.dsn == "" && !r.Shared() {
			err = fmt.Errorf("%w\n(with neither -config nor -db, this is the default path for you; the service's file is in its state directory, such as /var/lib/phonehome/history.db: use -config or -db)", err)
		}
		return nil, err
	}
	return r, nil
}

// stamp is how the commands print a time: local, to the minute.
func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04")
}

// historyTop prints the endpoints asked for most.
func historyTop(args []string, stdout, stderr io.Writer) int {
	c := newHistoryCommand("top", "[-client IP] [-instance NAME] [-since 24h] [-until now] [-limit 20] [-config FILE | -db PATH | -dsn DSN]", stderr)
	client := c.fs.String("client", "", "one machine's address (default: every machine)")
	instance := c.fs.String("instance", "", "one phonehome instance's queries, in a shared history (default: every instance's)")
	since := c.fs.String("since", "24h", "from this time")
	until := c.fs.String("until", "now", "to this time")
	limit := c.fs.Int("limit", 20, fmt.Sprintf("show this many endpoints, at most %d", history.MaxLimit))
	if code, ok := c.parse(args); !ok {
		return code
	}
	q := history.EndpointsQuery{Limit: *limit, Instance: *instance}
	var err error
	if q.Client, err = c.client(*client); err != nil {
		return c.fail(err)
	}
	if q.From, err = c.time("since", *since); err != nil {
		return c.fail(err)
	}
	if q.To, err = c.time("until", *until); err != nil {
		return c.fail(err)
	}
	if !q.From.Before(q.To) {
		return c.usageError("-since %s is not before -until %s", *since, *until)
	}
	if *limit < 1 || *limit > history.MaxLimit {
		return c.usageError("-limit %d: want 1 to %d", *limit, history.MaxLimit)
	}
	ctx := context.Background()
	r, err := c.open(ctx)
	if err != nil {
		return c.fail(err)
	}
	defer r.Close()
	es, err := r.Endpoints(ctx, q)
	if err != nil {
		return c.fail(err)
	}
	who := "every machine"
	if q.Client != "" {
		who = machine(q.Client, historyNames(ctx, r))
	}
	fmt.Fprintf(stdout, "# %s, %s to %s: %d endpoints\n", who, stamp(es.From), stamp(es.To), es.Total)
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "COUNT\tPATTERN\tCATEGORY\tACTIONS\tFIRST SEEN\tLAST SEEN")
	for _, e := range es.Endpoints {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", e.Count, e.Pattern, e.Category, spellActions(e.Actions), stamp(e.FirstSeen), stamp(e.LastSeen))
	}
	tw.Flush()
	if es.NextOffset != nil {
		fmt.Fprintf(stderr, "(%d more: -limit)\n", es.Total-*es.NextOffset)
	}
	return 0
}

// spellActions writes {"log": 2, "sinkhole": 5} as "log 2, sinkhole 5".
func spellActions(m map[string]int64) string {
	var parts []string
	for _, a := range []string{"sinkhole", "log", "allow"} {
		if n, ok := m[a]; ok {
			parts = append(parts, a+" "+strconv.FormatInt(n, 10))
		}
	}
	return strings.Join(parts, ", ")
}

// historyNew prints the endpoints machines asked for the first time.
func historyNew(args []string, stdout, stderr io.Writer) int {
	c := newHistoryCommand("new", "[-since 24h] [-client IP] [-limit 100] [-config FILE | -db PATH | -dsn DSN]", stderr)
	client := c.fs.String("client", "", "one machine's address (default: every machine)")
	since := c.fs.String("since", "24h", "first asked for since this time")
	limit := c.fs.Int("limit", history.DefaultLimit, fmt.Sprintf("show this many, at most %d", history.MaxLimit))
	if code, ok := c.parse(args); !ok {
		return code
	}
	q := history.NewQuery{Limit: *limit}
	var err error
	if q.Client, err = c.client(*client); err != nil {
		return c.fail(err)
	}
	if q.Since, err = c.time("since", *since); err != nil {
		return c.fail(err)
	}
	if *limit < 1 || *limit > history.MaxLimit {
		return c.usageError("-limit %d: want 1 to %d", *limit, history.MaxLimit)
	}
	ctx := context.Background()
	r, err := c.open(ctx)
	if err != nil {
		return c.fail(err)
	}
	defer r.Close()
	n, err := r.New(ctx, q)
	if err != nil {
		return c.fail(err)
	}
	if n.HistorySince == nil {
		fmt.Fprintln(stderr, "(the history holds no counts yet)")
	} else if n.HistorySince.After(q.Since) {
		fmt.Fprintf(stderr, "(the history begins at %s: what was asked for before it is not known, so anything then is new)\n", stamp(*n.HistorySince))
	}
	names := historyNames(ctx, r)
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CLIENT\tFIRST SEEN\tPATTERN\tCATEGORY\tLAST SEEN")
	for _, e := range n.Endpoints {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", machine(e.Client, names), stamp(e.FirstSeen), e.Pattern, e.Category, stamp(e.LastSeen))
	}
	tw.Flush()
	if n.NextOffset != nil {
		fmt.Fprintf(stderr, "(%d more: -limit)\n", n.Total-*n.NextOffset)
	}
	return 0
}

// historyExport writes the events or the counts of a time range.
func historyExport(args []string, stdout, stderr io.Writer) int {
	c := newHistoryCommand("export", "[-from T] [-to T] [-format jsonl|csv] [-table events|counts] [-config FILE | -db PATH | -dsn DSN]", stderr)
	from := c.fs.String("from", "", "from this time (default: all the history holds)")
	to := c.fs.String("to", "now", "to this time")
	format := c.fs.String("format", "jsonl", "jsonl (one JSON object a line, the query log's fields for events) or csv (with a header)")
	table := c.fs.String("table", "events", "events (the matches, kept events_retention) or counts (per minute, or per hour after 48 h, kept retention)")
	if code, ok := c.parse(args); !ok {
		return code
	}
	start, end := time.Unix(0, 0), c.now
	var err error
	if *from != "" {
		if start, err = c.time("from", *from); err != nil {
			return c.fail(err)
		}
	}
	if end, err = c.time("to", *to); err != nil {
		return c.fail(err)
	}
	if *format != "jsonl" && *format != "csv" {
		return c.usageError("-format %q: want jsonl or csv", *format)
	}
	if *table != "events" && *table != "counts" {
		return c.usageError("-table %q: want events or counts", *table)
	}
	ctx := context.Background()
	r, err := c.open(ctx)
	if err != nil {
		return c.fail(err)
	}
	defer r.Close()
	names := historyNames(ctx, r)
	out := bufio.NewWriter(stdout)
	cw := csv.NewWriter(out)
	enc := json.NewEncoder(out)
	// A shared history's rows say which instance counted them: a last
	// column of CSV.
	row := func(v any, fields []string, instance string) error {
		if *format == "csv" {
			if r.Shared() {
				fields = append(fields, instance)
			}
			return cw.Write(fields)
		}
		return enc.Encode(v)
	}
	header := func(fields ...string) {
		if *format == "csv" {
			if r.Shared() {
				fields = append(fields, "instance")
			}
			cw.Write(fields)
		}
	}
	if *table == "events" {
		header("time", "client", "group", "name", "type", "action", "category", "pattern", "windows", "family", "cname", "edition", "rcode", "source", "duration", "client_name")
		err = r.EachEvent(ctx, start, end, func(e *querylog.Record) error {
			e.ClientName = names[e.Client]
			return row(e, []string{e.Time.Format(time.RFC3339Nano), e.Client, e.Group, e.Name, e.Type, e.Action, e.Category, e.Pattern,
				e.Windows, e.Family, e.CNAME, e.Edition, e.Rcode, e.Source, strconv.FormatFloat(e.Duration, 'g', -1, 64), e.ClientName}, e.Instance)
		})
	} else {
		header("time", "span", "client", "group", "pattern", "category", "action", "n", "client_name")
		err = r.EachCount(ctx, start, end, func(n *history.CountRow) error {
			n.ClientName = names[n.Client]
			return row(n, []string{n.Time.Format(time.RFC3339), strconv.Itoa(n.Span), n.Client, n.Group, n.Pattern, n.Category, n.Action,
				strconv.FormatInt(n.N, 10), n.ClientName}, n.Instance)
		})
	}
	cw.Flush()
	if err == nil {
		err = cw.Error()
	}
	if ferr := out.Flush(); err == nil {
		err = ferr
	}
	if err != nil {
		return c.fail(err)
	}
	return 0
}

// historyNames are the machines' names the file keeps, by client; none
// when they cannot be read: the addresses are listed all the same.
func historyNames(ctx context.Context, r *history.Reader) map[string]string {
	names, err := r.Names(ctx)
	if err != nil {
		return nil
	}
	return names
}

// machine spells a client as the page does: "kids-pc (192.168.1.20)", or
// the address alone when it has no name.
func machine(client string, names map[string]string) string {
	if name := names[client]; name != "" {
		return name + " (" + client + ")"
	}
	return client
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
