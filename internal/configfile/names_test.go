package configfile

import (
	"errors"
	"net/netip"
	"reflect"
	"testing"

	"github.com/phonehome/phonehome/internal/clientnames"
	"github.com/phonehome/phonehome/internal/config"
)

// TestClientNamesConfig: a group's clients take addresses and networks as
// before, and mappings that name one machine; client_names is ptr unless
// the file says otherwise.
func TestClientNamesConfig(t *testing.T) {
	f, err := Parse("p.yaml", []byte(`client_names: config
policy:
  groups:
    - name: kids
      clients:
        - 192.168.1.64/28
        - {client: 192.168.1.20, name: kids-pc}
        - client: "fd00::20"
          name: Kids-PC.lan.
        - {client: 192.168.1.21}
    - name: study
      clients: [192.168.1.30, {client: 192.168.1.20, name: kids-pc}]
`))
	if err != nil {
		t.Fatal(err)
	}
	if f.Names.ClientNames != clientnames.ConfigOnly {
		t.Errorf("client_names: %q", f.Names.ClientNames)
	}
	var clients []string
	for _, c := range f.Policy.Rules.Groups[0].Clients {
		clients = append(clients, c.Prefix.String()+" "+c.Name)
	}
	if want := []string{"192.168.1.64/28 ", "192.168.1.20/32 kids-pc", "fd00::20/128 Kids-PC.lan", "192.168.1.21/32 "}; !reflect.DeepEqual(clients, want) {
		t.Errorf("clients %q, want %q", clients, want)
	}
	want := map[netip.Addr]string{netip.MustParseAddr("192.168.1.20"): "kids-pc", netip.MustParseAddr("fd00::20"): "Kids-PC.lan"}
	if got := f.Policy.ClientNames(); !reflect.DeepEqual(got, want) {
		t.Errorf("names %v, want %v", got, want)
	}
	for text, mode := range map[string]clientnames.Mode{"": clientnames.PTR, "client_names: ptr\n": clientnames.PTR, "client_names: OFF\n": clientnames.Off} {
		f, err := Parse("p.yaml", []byte(text))
		if err != nil || f.Names.ClientNames != mode {
			t.Errorf("%q: %v %q, want %q", text, err, f.Names.ClientNames, mode)
		}
	}
}

// TestClientNamesErrors: each mistake in a machine's name, at its place.
func TestClientNamesErrors(t *testing.T) {
	group := func(clients string) string {
		return "policy:\n  groups:\n    - name: a\n      clients:\n" + clients
	}
	for _, c := range []struct{ text, want string }{
		{"client_names: dhcp\n", `p.yaml:1:15: client_names: unknown value "dhcp" (valid: ptr, config, off)`},
		{group("        - {client: 192.168.1.0/24, name: lan}\n"),
			`p.yaml:5:20: policy.groups[0].clients[0]: a name is for one machine, and 192.168.1.0/24 is a network: name its machines one by one`},
		{group("        - {client: 192.168.1.20, name: kids pc}\n"),
			`p.yaml:5:40: policy.groups[0].clients[0]: "kids pc" is not a host name (letters, digits and hyphens between dots, such as kids-pc.lan)`},
		{group("        - {client: 192.168.1.20, name: -pc}\n"),
			`p.yaml:5:40: policy.groups[0].clients[0]: "-pc" is not a host name (letters, digits and hyphens between dots, such as kids-pc.lan)`},
		{group("        - {client: 192.168.1.20, name: kids-pc}\n        - {client: 192.168.1.20, name: study-pc}\n"),
			`p.yaml:6:40: 192.168.1.20 is named "study-pc" here and "kids-pc" at line 5: one name per address`},
		{group("        - {client: 192.168.1.20, name: kids-pc}\n    - name: b\n      clients: [{client: \"::ffff:192.168.1.20\", name: other}]\n"),
			`p.yaml:7:55: 192.168.1.20 is named "other" here and "kids-pc" at line 5: one name per address`},
		{group("        - {name: kids-pc}\n"),
			`p.yaml:5:11: policy.groups[0].clients[0]: an entry with a name needs client: (its address), such as {client: 192.168.1.20, name: kids-pc}`},
		{group("        - {client: , name: kids-pc}\n"),
			`p.yaml:5:11: policy.groups[0].clients[0]: an entry with a name needs client: (its address), such as {client: 192.168.1.20, name: kids-pc}`},
		{group("        - {client: 192.168.1.300, name: kids-pc}\n"),
			`p.yaml:5:20: policy.groups[0].clients[0].client: bad client address "192.168.1.300": want an address or CIDR such as 192.168.1.0/24`},
		{group("        - {client: 192.168.1.20, nmae: kids-pc}\n"),
			`p.yaml:5:34: unknown key "nmae" in policy.groups[0].clients[0] (valid: client, name)`},
		{group("        - {client: 192.168.1.20, name: [a, b]}\n"),
			`p.yaml:5:40: policy.groups[0].clients[0].name: want a single value`},
	} {
		_, err := Parse("p.yaml", []byte(c.text))
		var ce config.Errors
		if !errors.As(err, &ce) || err.Error() != c.want {
			t.Errorf("%q:\n got %v\nwant %s", c.text, err, c.want)
		}
	}
}
