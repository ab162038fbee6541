package deploy

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"go.yaml.in/yaml/v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	kjson "k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/apimachinery/pkg/util/intstr"
	k8syaml "sigs.k8s.io/yaml"

	"github.com/phonehome/phonehome/internal/configfile"
	"github.com/phonehome/phonehome/resolver"
)

const k8sDir = "deploy/kubernetes"

// The names the manifests agree on.
const (
	k8sConfigKey     = "phonehome.yaml" // the ConfigMap's key, the file phonehome reads
	k8sDSNEnv        = "PHONEHOME_HISTORY_DSN"
	k8sJob           = "phonehome" // the job alerts.yml and the dashboard select
	k8sSecretFile    = "secret.example.yaml"
	hostnameTopology = "kubernetes.io/hostname"
)

// kustomization is the part of kustomization.yaml the base uses, decoded
// strictly: a field kustomize knows but this struct does not is an error
// here, so that adding one means adding its check.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Resources  []string `json:"resources"`
}

// podMonitor is the Prometheus Operator's monitoring.coreos.com/v1
// PodMonitor, as far as the base uses it. It is not in k8s.io/api; decoded
// strictly, a misspelt field is an error rather than ignored.
type podMonitor struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
	Spec            struct {
		JobLabel          string               `json:"jobLabel,omitempty"`
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector *struct {
			Any        bool     `json:"any,omitempty"`
			MatchNames []string `json:"matchNames,omitempty"`
		} `json:"namespaceSelector,omitempty"`
		PodMetricsEndpoints []struct {
			Port          string `json:"port"`
			Path          string `json:"path,omitempty"`
			Scheme        string `json:"scheme,omitempty"`
			Interval      string `json:"interval,omitempty"`
			ScrapeTimeout string `json:"scrapeTimeout,omitempty"`
			Relabelings   []struct {
				SourceLabels []string `json:"sourceLabels,omitempty"`
				Separator    string   `json:"separator,omitempty"`
				TargetLabel  string   `json:"targetLabel,omitempty"`
				Regex        string   `json:"regex,omitempty"`
				Replacement  string   `json:"replacement,omitempty"`
				Action       string   `json:"action,omitempty"`
			} `json:"relabelings,omitempty"`
		} `json:"podMetricsEndpoints"`
	} `json:"spec"`
}

// k8sBase is the kustomize base's objects, each decoded strictly into its
// type.
type k8sBase struct {
	deployments []*appsv1.Deployment
	services    []*corev1.Service
	configMaps  []*corev1.ConfigMap
	pdbs        []*policyv1.PodDisruptionBudget
	podMonitors []*podMonitor
	// secretExample is secret.example.yaml: not a resource (the DSN is the
	// user's to write), but its name and key must be the ones the
	// Deployment reads. nil when checking kustomize's output.
	secretExample *corev1.Secret
}

// k8sScheme knows the kinds of k8s.io/api the base may use.
var k8sScheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{appsv1.AddToScheme, corev1.AddToScheme, policyv1.AddToScheme} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}()

// k8sDecoder is the API server's own strict YAML decoding: field names are
// case-sensitive, and an unknown or repeated field is an error.
var k8sDecoder = kjson.NewSerializerWithOptions(kjson.DefaultMetaFactory, k8sScheme, k8sScheme,
	kjson.SerializerOptions{Yaml: true, Strict: true})

// yamlDocs splits a YAML stream into its documents.
func yamlDocs(data []byte) ([][]byte, error) {
	var docs [][]byte
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		b, err := yaml.Marshal(&n)
		if err != nil {
			return nil, err
		}
		docs = append(docs, b)
	}
}

// add decodes one manifest strictly into its type and adds it to the base.
func (b *k8sBase) add(where string, doc []byte) error {
	var tm struct {
		APIVersion string `yaml:"apiVersion"`
		Kind       string `yaml:"kind"`
	}
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	if tm.APIVersion == "monitoring.coreos.com/v1" && tm.Kind == "PodMonitor" {
		var pm podMonitor
		if err := k8syaml.UnmarshalStrict(doc, &pm); err != nil {
			return fmt.Errorf("%s: PodMonitor: %w", where, err)
		}
		b.podMonitors = append(b.podMonitors, &pm)
		return nil
	}
	obj, _, err := k8sDecoder.Decode(doc, nil, nil)
	if err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	switch o := obj.(type) {
	case *appsv1.Deployment:
		b.deployments = append(b.deployments, o)
	case *corev1.Service:
		b.services = append(b.services, o)
	case *corev1.ConfigMap:
		b.configMaps = append(b.configMaps, o)
	case *policyv1.PodDisruptionBudget:
		b.pdbs = append(b.pdbs, o)
	default:
		return fmt.Errorf("%s: %s %s: a kind these tests do not check", where, tm.APIVersion, tm.Kind)
	}
	return nil
}

// readK8sFiles reads the base: kustomization.yaml, the files it names and
// secret.example.yaml, by name.
func readK8sFiles(t *testing.T) (kustomization, map[string][]byte) {
	t.Helper()
	var k kustomization
	if err := k8syaml.UnmarshalStrict(readFile(t, k8sDir+"/kustomization.yaml"), &k); err != nil {
		t.Fatalf("%s/kustomization.yaml: %v", k8sDir, err)
	}
	files := map[string][]byte{}
	for _, r := range append(slices.Clone(k.Resources), k8sSecretFile) {
		files[r] = readFile(t, path.Join(k8sDir, r))
	}
	return k, files
}

// parseK8sFiles decodes the resources, one object per file, and the secret
// example.
func parseK8sFiles(resources []string, files map[string][]byte) (*k8sBase, error) {
	b := &k8sBase{}
	for _, r := range resources {
		docs, err := yamlDocs(files[r])
		if err != nil {
			return nil, fmt.Errorf("%s: %w", r, err)
		}
		if len(docs) != 1 {
			return nil, fmt.Errorf("%s: %d documents, want one object per file", r, len(docs))
		}
		if err := b.add(r, docs[0]); err != nil {
			return nil, err
		}
	}
	obj, _, err := k8sDecoder.Decode(files[k8sSecretFile], nil, nil)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", k8sSecretFile, err)
	}
	s, ok := obj.(*corev1.Secret)
	if !ok {
		return nil, fmt.Errorf("%s: a %T, want a Secret", k8sSecretFile, obj)
	}
	b.secretExample = s
	return b, nil
}

// watchConfigPending matches the error configfile gives while it does not
// know watch_config yet.
var watchConfigPending = regexp.MustCompile(`unknown key "watch_config"`)

// k8sConfig loads the ConfigMap's phonehome.yaml as phonehome validate
// does. watch_config is being added to configfile: until it knows the key,
// the rest of the file is checked without it (and the test says so).
func k8sConfig(cm *corev1.ConfigMap, logf func(string, ...any)) (*configfile.File, error) {
	text, ok := cm.Data[k8sConfigKey]
	if !ok {
		return nil, fmt.Errorf("ConfigMap %s has no key %s", cm.Name, k8sConfigKey)
	}
	var raw map[string]any
	if err := yaml.Unmarshal([]byte(text), &raw); err != nil {
		return nil, fmt.Errorf("ConfigMap %s, %s: %w", cm.Name, k8sConfigKey, err)
	}
	if raw["watch_config"] != true {
		return nil, fmt.Errorf("ConfigMap %s, %s: want watch_config: true, so that an edit of the ConfigMap applies itself", cm.Name, k8sConfigKey)
	}
	name := fmt.Sprintf("%s/configmap.yaml (%s)", k8sDir, k8sConfigKey)
	cfg, err := configfile.Parse(name, []byte(text))
	if err != nil && watchConfigPending.MatchString(err.Error()) {
		logf("internal/configfile does not know watch_config yet: checking %s without it", name)
		text = regexp.MustCompile(`(?m)^watch_config:.*\n`).ReplaceAllString(text, "")
		cfg, err = configfile.Parse(name, []byte(text))
	}
	if err != nil {
		return nil, fmt.Errorf("%s does not load:\n%w", name, err)
	}
	_, warns, err := resolver.Validate(&cfg.Config, "/nonexistent")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if len(warns) > 0 {
		return nil, fmt.Errorf("%s: warnings: %q", name, warns)
	}
	return cfg, nil
}

// matches reports whether a label selector selects a pod with these labels.
// An empty selector selects nothing here: it would take every pod in the
// namespace.
func matches(sel *metav1.LabelSelector, podLabels map[string]string) error {
	if sel == nil || len(sel.MatchLabels) == 0 && len(sel.MatchExpressions) == 0 {
		return errors.New("an empty selector (every pod in the namespace)")
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return err
	}
	if !s.Matches(labels.Set(podLabels)) {
		return fmt.Errorf("selector %s does not match the pods' labels %v", s, podLabels)
	}
	return nil
}

func mapMatches(sel map[string]string, podLabels map[string]string) error {
	return matches(&metav1.LabelSelector{MatchLabels: sel}, podLabels)
}

// allAddresses reports whether a listen address's host is every address
// (":53", "0.0.0.0:53", "[::]:53"): what arrives at the pod IP.
func allAddresses(host string) bool {
	if host == "" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsUnspecified()
}

// portOf resolves a probe's, a Service's or a PodMonitor's port (a name or
// a number) to the container's port of that protocol.
func portOf(c *corev1.Container, p intstr.IntOrString, proto corev1.Protocol) (int32, error) {
	for _, cp := range c.Ports {
		pr := cmp.Or(cp.Protocol, corev1.ProtocolTCP)
		if pr != proto {
			continue
		}
		if p.Type == intstr.String && cp.Name == p.StrVal || p.Type == intstr.Int && cp.ContainerPort == p.IntVal {
			return cp.ContainerPort, nil
		}
	}
	return 0, fmt.Errorf("container %s has no %s port %s", c.Name, proto, p.String())
}

// check returns what is wrong with the base.
func (b *k8sBase) check(logf func(string, ...any)) []string {
	var errs []string
	fail := func(format string, args ...any) { errs = append(errs, fmt.Sprintf(format, args...)) }
	if len(b.deployments) != 1 || len(b.configMaps) != 1 || len(b.pdbs) != 1 || len(b.podMonitors) != 1 || len(b.services) == 0 {
		return []string{fmt.Sprintf("want one Deployment, ConfigMap, PodDisruptionBudget and PodMonitor and a Service or more; have %d, %d, %d, %d and %d",
			len(b.deployments), len(b.configMaps), len(b.pdbs), len(b.podMonitors), len(b.services))}
	}
	d, cm := b.deployments[0], b.configMaps[0]
	cfg, err := k8sConfig(cm, logf)
	if err != nil {
		return []string{err.Error()}
	}
	pod := &d.Spec.Template.Spec
	podLabels := d.Spec.Template.Labels
	if len(pod.Containers) != 1 {
		return []string{fmt.Sprintf("Deployment %s: %d containers, want phonehome alone", d.Name, len(pod.Containers))}
	}
	c := &pod.Containers[0]

	// Two replicas, on different nodes.
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		fail("Deployment %s: want replicas: 2", d.Name)
	}
	if err := matches(d.Spec.Selector, podLabels); err != nil {
		fail("Deployment %s: spec.selector: %v", d.Name, err)
	}
	spread := false
	for _, tsc := range pod.TopologySpreadConstraints {
		if tsc.TopologyKey == hostnameTopology && tsc.WhenUnsatisfiable == corev1.DoNotSchedule && tsc.MaxSkew == 1 {
			if err := matches(tsc.LabelSelector, podLabels); err != nil {
				fail("Deployment %s: topologySpreadConstraints: %v", d.Name, err)
			} else {
				spread = true
			}
		}
	}
	if a := pod.Affinity; a != nil && a.PodAntiAffinity != nil {
		for _, term := range a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution {
			if term.TopologyKey == hostnameTopology && matches(term.LabelSelector, podLabels) == nil {
				spread = true
			}
		}
	}
	if !spread {
		fail("Deployment %s: the replicas are not kept on different nodes: want a topologySpreadConstraint on %s (maxSkew 1, DoNotSchedule) or a required pod anti-affinity, selecting the pods", d.Name, hostnameTopology)
	}

	// Non-root, read-only, only NET_BIND_SERVICE.
	psc := cmp.Or(pod.SecurityContext, &corev1.PodSecurityContext{})
	csc := cmp.Or(c.SecurityContext, &corev1.SecurityContext{})
	if pod.HostNetwork || pod.HostPID || pod.HostIPC {
		fail("Deployment %s: uses the host's network, PID or IPC namespace", d.Name)
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		fail("Deployment %s: want automountServiceAccountToken: false (phonehome uses no Kubernetes API)", d.Name)
	}
	nonRoot := cmp.Or(csc.RunAsNonRoot, psc.RunAsNonRoot)
	if nonRoot == nil || !*nonRoot {
		fail("container %s: want runAsNonRoot: true", c.Name)
	}
	// The image's USER is a name (nonroot), which the kubelet cannot
	// check against runAsNonRoot: the pod must say the user's number.
	if uid := cmp.Or(csc.RunAsUser, psc.RunAsUser); uid == nil || *uid == 0 {
		fail("container %s: want runAsUser set to a user other than root (65532, the image's nonroot): the image's USER is a name, and runAsNonRoot cannot check a name", c.Name)
	}
	if csc.ReadOnlyRootFilesystem == nil || !*csc.ReadOnlyRootFilesystem {
		fail("container %s: want readOnlyRootFilesystem: true", c.Name)
	}
	if csc.AllowPrivilegeEscalation == nil || *csc.AllowPrivilegeEscalation {
		fail("container %s: want allowPrivilegeEscalation: false", c.Name)
	}
	if csc.Privileged != nil && *csc.Privileged {
		fail("container %s: privileged", c.Name)
	}
	if caps := csc.Capabilities; caps == nil || !slices.Equal(caps.Drop, []corev1.Capability{"ALL"}) || !slices.Equal(caps.Add, []corev1.Capability{"NET_BIND_SERVICE"}) {
		fail("container %s: want capabilities drop [ALL], add [NET_BIND_SERVICE]; have %+v", c.Name, caps)
	}
	if sp := cmp.Or(csc.SeccompProfile, psc.SeccompProfile); sp == nil || sp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		fail("container %s: want seccompProfile RuntimeDefault", c.Name)
	}

	// The DSN from an optional Secret.
	var dsn *corev1.EnvVar
	for i, e := range c.Env {
		if e.Name == k8sDSNEnv {
			dsn = &c.Env[i]
		}
	}
	switch {
	case dsn == nil || dsn.ValueFrom == nil || dsn.ValueFrom.SecretKeyRef == nil:
		fail("container %s: want env %s from a Secret", c.Name, k8sDSNEnv)
	case dsn.ValueFrom.SecretKeyRef.Optional == nil || !*dsn.ValueFrom.SecretKeyRef.Optional:
		fail("container %s: env %s: want optional: true, so that pods start without the Secret", c.Name, k8sDSNEnv)
	case b.secretExample != nil:
		ref := dsn.ValueFrom.SecretKeyRef
		if _, ok := b.secretExample.StringData[ref.Key]; ref.Name != b.secretExample.Name || !ok {
			fail("env %s reads key %s of Secret %s; %s is Secret %s with keys %v", k8sDSNEnv, ref.Key, ref.Name, k8sSecretFile, b.secretExample.Name, slices.Sorted(maps.Keys(b.secretExample.StringData)))
		}
	}

	// The config: the ConfigMap mounted as a directory where -config looks.
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		mounts[m.MountPath] = m
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	args := append(slices.Clone(c.Command), c.Args...)
	if i := slices.Index(args, "-config"); i < 0 || i+1 >= len(args) {
		fail("container %s: args %q name no -config file", c.Name, args)
	} else if dir, file := path.Split(args[i+1]); file != k8sConfigKey {
		fail("container %s: -config %s: want a file named %s, the ConfigMap's key", c.Name, args[i+1], k8sConfigKey)
	} else if m, ok := mounts[path.Clean(dir)]; !ok {
		fail("container %s: nothing is mounted at %s, where -config %s is", c.Name, path.Clean(dir), args[i+1])
	} else if v := volumes[m.Name]; v.ConfigMap == nil || v.ConfigMap.Name != cm.Name || m.SubPath != "" || len(v.ConfigMap.Items) > 0 {
		fail("container %s: %s: want ConfigMap %s mounted whole, without subPath or items (a subPath mount never sees an edit)", c.Name, m.MountPath, cm.Name)
	}

	// The history: on an emptyDir, bigger than max_size.
	if cfg.History.Off {
		fail("%s: history is off", k8sConfigKey)
	} else if m, ok := mounts[path.Dir(cfg.History.Path)]; !ok {
		fail("history.path %s: no volume is mounted at %s, and the root file system is read-only", cfg.History.Path, path.Dir(cfg.History.Path))
	} else if v := volumes[m.Name]; v.EmptyDir == nil || m.ReadOnly {
		fail("history.path %s: want a writable emptyDir at %s", cfg.History.Path, m.MountPath)
	} else if lim := v.EmptyDir.SizeLimit; lim == nil || lim.Cmp(*resource.NewQuantity(int64(cfg.History.MaxSize), resource.BinarySI)) <= 0 {
		fail("volume %s: want a sizeLimit above history.max_size (%d bytes), or the kubelet evicts the pod before phonehome trims the file", m.Name, cfg.History.MaxSize)
	}

	// Ports: the config's listen and http against the container, the probes,
	// the Services and the PodMonitor.
	dnsPorts := map[int32]bool{}
	for _, l := range cfg.Listen {
		host, port, err := net.SplitHostPort(l)
		n, perr := strconv.ParseUint(port, 10, 16)
		if err != nil || perr != nil || !allAddresses(host) {
			fail("%s: listen %q: want every address of the pod (\":53\"), where the Service's traffic arrives", k8sConfigKey, l)
			continue
		}
		dnsPorts[int32(n)] = true
	}
	var httpPort int32
	if host, port, err := net.SplitHostPort(*cfg.Web.HTTP); err != nil || !allAddresses(host) {
		fail("%s: http %q: want every address of the pod (\":8053\"): the kubelet's probes and Prometheus come to the pod IP", k8sConfigKey, *cfg.Web.HTTP)
	} else {
		n, _ := strconv.ParseUint(port, 10, 16)
		httpPort = int32(n)
	}
	for p := range dnsPorts {
		for _, proto := range []corev1.Protocol{corev1.ProtocolUDP, corev1.ProtocolTCP} {
			if _, err := portOf(c, intstr.FromInt32(p), proto); err != nil {
				fail("%s listens on %d: %v", k8sConfigKey, p, err)
			}
		}
		if p < 1024 && !slices.Contains(psc.Sysctls, corev1.Sysctl{Name: "net.ipv4.ip_unprivileged_port_start", Value: "0"}) {
			fail("%s listens on %d as a non-root user: want the pod sysctl net.ipv4.ip_unprivileged_port_start=0 (Kubernetes passes no ambient capability, so NET_BIND_SERVICE alone does not reach the process)", k8sConfigKey, p)
		}
	}
	if _, err := portOf(c, intstr.FromInt32(httpPort), corev1.ProtocolTCP); err != nil {
		fail("%s: http is on port %d: %v", k8sConfigKey, httpPort, err)
	}
	for _, cp := range c.Ports {
		proto := cmp.Or(cp.Protocol, corev1.ProtocolTCP)
		if !dnsPorts[cp.ContainerPort] && !(cp.ContainerPort == httpPort && proto == corev1.ProtocolTCP) {
			fail("container %s: port %s %d/%s: %s listens on no such port", c.Name, cp.Name, cp.ContainerPort, proto, k8sConfigKey)
		}
	}
	for _, pr := range []struct {
		name, path string
		probe      *corev1.Probe
		required   bool
	}{
		{"livenessProbe", "/healthz", c.LivenessProbe, true},
		{"readinessProbe", "/readyz", c.ReadinessProbe, true},
		{"startupProbe", "/healthz", c.StartupProbe, false},
	} {
		if pr.probe == nil {
			if pr.required {
				fail("container %s: no %s", c.Name, pr.name)
			}
			continue
		}
		g := pr.probe.HTTPGet
		if g == nil || g.Path != pr.path || cmp.Or(g.Scheme, corev1.URISchemeHTTP) != corev1.URISchemeHTTP {
			fail("container %s: %s: want an HTTP GET of %s", c.Name, pr.name, pr.path)
			continue
		}
		if g.Host != "" || slices.ContainsFunc(g.HTTPHeaders, func(h corev1.HTTPHeader) bool { return strings.EqualFold(h.Name, "Host") }) {
			fail("container %s: %s: leave the host alone: the pod IP passes phonehome's Host check", c.Name, pr.name)
		}
		if p, err := portOf(c, g.Port, corev1.ProtocolTCP); err != nil || p != httpPort {
			fail("container %s: %s: port %s is not http's port %d (%v)", c.Name, pr.name, g.Port.String(), httpPort, err)
		}
	}

	// Services: they select the pods, and each port reaches a port the
	// config listens on. DNS keeps the client's address.
	dnsServed := map[corev1.Protocol]bool{}
	for _, s := range b.services {
		if err := mapMatches(s.Spec.Selector, podLabels); err != nil {
			fail("Service %s: %v", s.Name, err)
		}
		for _, sp := range s.Spec.Ports {
			proto := cmp.Or(sp.Protocol, corev1.ProtocolTCP)
			tp := sp.TargetPort
			if tp == (intstr.IntOrString{}) {
				tp = intstr.FromInt32(sp.Port)
			}
			p, err := portOf(c, tp, proto)
			if err != nil {
				fail("Service %s, port %s: targetPort: %v", s.Name, sp.Name, err)
				continue
			}
			switch {
			case dnsPorts[p]:
				if sp.Port == 53 {
					dnsServed[proto] = true
				}
				if s.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
					fail("Service %s: DNS with externalTrafficPolicy %q: want Local, or clients' addresses become a node's and every machine falls into the default group", s.Name, s.Spec.ExternalTrafficPolicy)
				}
			case p == httpPort:
				// phonehome answers 421 to a Host it was not told.
				if !slices.Contains(cfg.Web.HTTPHosts, s.Name) {
					fail("Service %s reaches the page, but http_hosts %q does not list %s: it would get 421", s.Name, cfg.Web.HTTPHosts, s.Name)
				}
			}
		}
		if s.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal &&
			s.Spec.Type != corev1.ServiceTypeLoadBalancer && s.Spec.Type != corev1.ServiceTypeNodePort {
			fail("Service %s: externalTrafficPolicy Local needs type LoadBalancer or NodePort, not %q", s.Name, s.Spec.Type)
		}
	}
	if !dnsServed[corev1.ProtocolUDP] || !dnsServed[corev1.ProtocolTCP] {
		fail("no Service serves DNS on port 53 over both UDP and TCP (have %v)", dnsServed)
	}

	// The PodDisruptionBudget lets a drain take one pod and keeps one.
	pdb := b.pdbs[0]
	if err := matches(pdb.Spec.Selector, podLabels); err != nil {
		fail("PodDisruptionBudget %s: %v", pdb.Name, err)
	}
	replicas := int32(2)
	if d.Spec.Replicas != nil {
		replicas = *d.Spec.Replicas
	}
	switch mu, ma := pdb.Spec.MaxUnavailable, pdb.Spec.MinAvailable; {
	case mu != nil && ma == nil && mu.Type == intstr.Int && mu.IntVal >= 1 && mu.IntVal < replicas:
	case ma != nil && mu == nil && ma.Type == intstr.Int && ma.IntVal >= 1 && ma.IntVal < replicas:
	default:
		fail("PodDisruptionBudget %s: want maxUnavailable or minAvailable between 1 and %d replicas less one: a drain may take one pod and leaves one", pdb.Name, replicas)
	}

	// The PodMonitor scrapes /metrics on http, as job phonehome.
	pm := b.podMonitors[0]
	if err := matches(&pm.Spec.Selector, podLabels); err != nil {
		fail("PodMonitor %s: %v", pm.Metadata.Name, err)
	}
	if job := podLabels[pm.Spec.JobLabel]; pm.Spec.JobLabel == "" || job != k8sJob {
		fail("PodMonitor %s: jobLabel %q gives job %q: want a pod label whose value is %q, the job alerts.yml and the dashboard select", pm.Metadata.Name, pm.Spec.JobLabel, job, k8sJob)
	}
	if len(pm.Spec.PodMetricsEndpoints) == 0 {
		fail("PodMonitor %s: no podMetricsEndpoints", pm.Metadata.Name)
	}
	for _, e := range pm.Spec.PodMetricsEndpoints {
		if p, err := portOf(c, intstr.FromString(e.Port), corev1.ProtocolTCP); err != nil || p != httpPort {
			fail("PodMonitor %s: port %q is not http's port %d (%v)", pm.Metadata.Name, e.Port, httpPort, err)
		}
		if cmp.Or(e.Path, "/metrics") != "/metrics" || cmp.Or(e.Scheme, "http") != "http" {
			fail("PodMonitor %s: scrapes %s://…%s, phonehome serves http://…/metrics", pm.Metadata.Name, e.Scheme, e.Path)
		}
	}
	return errs
}

// TestKubernetes decodes the kustomize base strictly into k8s.io/api's
// types and checks that its parts agree: selectors and labels, the
// ConfigMap's listen and http against the containerPorts, probes, Services
// and PodMonitor, the security context, the history's volume and the DSN's
// Secret.
func TestKubernetes(t *testing.T) {
	k, files := readK8sFiles(t)
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Errorf("kustomization.yaml: %s %s, want kustomize.config.k8s.io/v1beta1 Kustomization", k.APIVersion, k.Kind)
	}
	// Every manifest in the directory is a resource, but the example.
	entries, err := os.ReadDir(root + "/" + k8sDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		n := e.Name()
		if strings.HasSuffix(n, ".yaml") && n != "kustomization.yaml" && n != k8sSecretFile && !slices.Contains(k.Resources, n) {
			t.Errorf("%s/%s is not in kustomization.yaml's resources", k8sDir, n)
		}
	}
	if slices.Contains(k.Resources, k8sSecretFile) {
		t.Errorf("%s is a resource: its placeholder DSN would be applied", k8sSecretFile)
	}
	b, err := parseK8sFiles(k.Resources, files)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range b.check(t.Logf) {
		t.Error(e)
	}
	if len(b.deployments) != 1 {
		return
	}
	// runAsUser is the image's user: distroless's nonroot is 65532.
	u, err := last[*instructions.UserCommand](readDockerfile(t).runtimeStage())
	if err != nil {
		t.Fatal(err)
	}
	user, _, _ := strings.Cut(u.User, ":")
	if user == "nonroot" {
		user = "65532"
	}
	psc := cmp.Or(b.deployments[0].Spec.Template.Spec.SecurityContext, &corev1.PodSecurityContext{})
	if uid := psc.RunAsUser; uid == nil || strconv.FormatInt(*uid, 10) != user {
		t.Errorf("the image runs as user %s (%s); deployment.yaml's pod runAsUser is not that", u.User, user)
	}
}

// TestKubernetesChecks breaks the base one way per case to show that each
// check fails.
func TestKubernetesChecks(t *testing.T) {
	k, files := readK8sFiles(t)
	for _, tc := range []struct {
		file, old, new, want string
	}{
		{"deployment.yaml", "readOnlyRootFilesystem: true", "readOnlyRootFilesystm: true", `unknown field "spec.template.spec.containers[0].securityContext.readOnlyRootFilesystm"`},
		{"deployment.yaml", "replicas: 2", "Replicas: 2", `unknown field "spec.Replicas"`}, // case matters, as in the API server
		{"deployment.yaml", "  replicas: 2", "  replicas: 2\n  replicas: 3", `key "replicas" already set`},
		{"podmonitor.yaml", "jobLabel:", "jobLable:", `unknown field "jobLable"`},
		{"deployment.yaml", "replicas: 2", "replicas: 1", "want replicas: 2"},
		{"deployment.yaml", "topologyKey: kubernetes.io/hostname", "topologyKey: topology.kubernetes.io/zone", "not kept on different nodes"},
		{"deployment.yaml", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false", "want readOnlyRootFilesystem: true"},
		{"deployment.yaml", "allowPrivilegeEscalation: false", "allowPrivilegeEscalation: true", "want allowPrivilegeEscalation: false"},
		{"deployment.yaml", "runAsNonRoot: true", "runAsNonRoot: false", "want runAsNonRoot: true"},
		{"deployment.yaml", "runAsUser: 65532", "runAsUser: 0", "want runAsUser set"},
		{"deployment.yaml", "add: [NET_BIND_SERVICE]", "add: [NET_BIND_SERVICE, NET_ADMIN]", "want capabilities drop [ALL], add [NET_BIND_SERVICE]"},
		{"deployment.yaml", "drop: [ALL]", "drop: [NET_RAW]", "want capabilities drop [ALL]"},
		{"deployment.yaml", "type: RuntimeDefault", "type: Unconfined", "want seccompProfile RuntimeDefault"},
		{"deployment.yaml", "automountServiceAccountToken: false", "automountServiceAccountToken: true", "automountServiceAccountToken"},
		{"deployment.yaml", `value: "0"`, `value: "1024"`, "net.ipv4.ip_unprivileged_port_start=0"},
		{"deployment.yaml", "containerPort: 8053", "containerPort: 8080", "http is on port 8053"},
		{"deployment.yaml", "containerPort: 53\n              protocol: UDP", "containerPort: 5353\n              protocol: UDP", "no UDP port 53"},
		{"deployment.yaml", "path: /readyz", "path: /healthz", "readinessProbe: want an HTTP GET of /readyz"},
		{"deployment.yaml", "optional: true", "optional: false", "want optional: true"},
		{"deployment.yaml", "key: dsn", "key: url", "reads key url"},
		{"deployment.yaml", "mountPath: /etc/phonehome\n", "mountPath: /etc/phonehome/phonehome.yaml\n              subPath: phonehome.yaml\n", "nothing is mounted at /etc/phonehome"},
		{"deployment.yaml", "sizeLimit: 2Gi", "sizeLimit: 512Mi", "want a sizeLimit above history.max_size"},
		{"deployment.yaml", "mountPath: /var/lib/phonehome", "mountPath: /var/lib/state", "no volume is mounted at /var/lib/phonehome"},
		{"configmap.yaml", `listen: [":53"]`, `listen: [":5353"]`, "listens on 5353: container phonehome has no UDP port 5353"},
		{"configmap.yaml", `listen: [":53"]`, `listen: ["127.0.0.1:53"]`, "want every address of the pod"},
		{"configmap.yaml", `http: ":8053"`, `http: "127.0.0.1:8053"`, "the kubelet's probes and Prometheus come to the pod IP"},
		{"configmap.yaml", `http: ":8053"`, `http: ":9090"`, "is not http's port 9090"},
		{"configmap.yaml", "watch_config: true", "watch_config: false", "want watch_config: true"},
		{"configmap.yaml", "rate_limit: 200", "rate_limit: lots", "does not load"},
		{"service.yaml", "externalTrafficPolicy: Local", "externalTrafficPolicy: Cluster", "want Local"},
		{"service.yaml", "targetPort: dns-udp", "targetPort: dns", "no UDP port dns"},
		{"service.yaml", "protocol: UDP", "protocol: TCP", "over both UDP and TCP"},
		{"service.yaml", "  selector:\n    app.kubernetes.io/name: phonehome", "  selector:\n    app.kubernetes.io/name: phone", "does not match the pods' labels"},
		{"service.yaml", "    - name: dns-tcp", "    - name: http\n      port: 80\n      targetPort: http\n    - name: dns-tcp", "does not list phonehome-dns: it would get 421"},
		{"poddisruptionbudget.yaml", "maxUnavailable: 1", "maxUnavailable: 2", "a drain may take one pod and leaves one"},
		{"poddisruptionbudget.yaml", "app.kubernetes.io/name: phonehome\n", "app.kubernetes.io/name: other\n", "PodDisruptionBudget phonehome: selector"},
		{"podmonitor.yaml", "port: http", "port: metrics", `port "metrics" is not http's port`},
		{"podmonitor.yaml", "jobLabel: app.kubernetes.io/name", "jobLabel: app", "want a pod label whose value is"},
		{"podmonitor.yaml", "path: /metrics", "path: /stats", "phonehome serves"},
		{"secret.example.yaml", "name: phonehome-history", "name: history", "Secret history"},
	} {
		t.Run(tc.file+": "+tc.new, func(t *testing.T) {
			text := string(files[tc.file])
			if !strings.Contains(text, tc.old) {
				t.Fatalf("%s has no %q: update this case", tc.file, tc.old)
			}
			broken := map[string][]byte{}
			for n, b := range files {
				broken[n] = b
			}
			broken[tc.file] = []byte(strings.ReplaceAll(text, tc.old, tc.new))
			var got []string
			b, err := parseK8sFiles(k.Resources, broken)
			if err != nil {
				got = []string{err.Error()}
			} else {
				got = b.check(func(string, ...any) {})
			}
			all := strings.Join(got, "\n")
			if !strings.Contains(all, tc.want) {
				t.Errorf("want an error with %q, got:\n%s", tc.want, all)
			}
		})
	}
}

// kustomizeCmd finds kustomize, or kubectl (which has it built in). It is
// not a Debian package scripts/test.sh installs (Debian's kubernetes-client
// is too old to carry kustomize v5), so without it the test is skipped, in
// CI too: TestKubernetes's strict decoding is the check there.
func kustomizeCmd(t *testing.T) []string {
	t.Helper()
	if p, err := exec.LookPath("kustomize"); err == nil {
		return []string{p, "build"}
	}
	if p, err := exec.LookPath("kubectl"); err == nil {
		return []string{p, "kustomize"}
	}
	// kubectl is on this project's machines (the base image's Google Cloud
	// SDK); Debian's kubernetes-client is too old to carry kustomize v5.
	if os.Getenv("CI") != "" {
		t.Fatal("neither kustomize nor kubectl is installed")
	}
	t.Skip("neither kustomize nor kubectl is installed; TestKubernetes checks the files")
	return nil
}

// TestKustomizeBuild builds the base with kustomize and checks what it
// would apply as TestKubernetes checks the files.
func TestKustomizeBuild(t *testing.T) {
	cmd := kustomizeCmd(t)
	out := run(t, "", nil, cmd[0], append(cmd[1:], root+"/"+k8sDir)...)
	docs, err := yamlDocs([]byte(out))
	if err != nil {
		t.Fatalf("%s output: %v", strings.Join(cmd, " "), err)
	}
	k, _ := readK8sFiles(t)
	if len(docs) != len(k.Resources) {
		t.Errorf("kustomize built %d objects from %d resources", len(docs), len(k.Resources))
	}
	b := &k8sBase{}
	for i, doc := range docs {
		if err := b.add(fmt.Sprintf("%s output, object %d", strings.Join(cmd, " "), i+1), doc); err != nil {
			t.Fatal(err)
		}
	}
	for _, e := range b.check(t.Logf) {
		t.Error(e)
	}
}
