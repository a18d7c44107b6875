// Package k8s holds gcnats' Kubernetes manifests; its tests build every
// kustomization as kubectl apply -k would, decode each object strictly into
// its Kubernetes type and check the sidecar's wiring against the settings
// and metrics the gcnats source defines.
package k8s

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

const (
	appName       = "contact-centre-app"
	sidecarName   = "gcnats"
	nonrootUID    = 65532
	secretsRoot   = "/var/run/secrets/"
	secretDir     = secretsRoot + "genesys"
	leafSecretDir = secretsRoot + "nats-leaf"
	defaultHTTP   = ":8080"
	defaultListen = "127.0.0.1:4222"
)

// goRuntimeEnv are variables the gcnats binary reads through the Go
// runtime rather than through Settings.
var goRuntimeEnv = []string{"GOMEMLIMIT", "GOMAXPROCS", "GOGC", "GODEBUG"}

// manifests is one kustomization's output, by kind and name.
type manifests struct {
	deployments  map[string]*appsv1.Deployment
	statefulSets map[string]*appsv1.StatefulSet
	services     map[string]*corev1.Service
	configMaps   map[string]*corev1.ConfigMap
	secrets      map[string]*corev1.Secret
	pdbs         map[string]*policyv1.PodDisruptionBudget
	pvcs         map[string]*corev1.PersistentVolumeClaim
}

// apiVersions are the only kinds the manifests may hold, with the API
// version each must use.
var apiVersions = map[string]string{
	"Deployment":            "apps/v1",
	"StatefulSet":           "apps/v1",
	"Service":               "v1",
	"ConfigMap":             "v1",
	"Secret":                "v1",
	"PodDisruptionBudget":   "policy/v1",
	"PersistentVolumeClaim": "v1",
}

// build runs kustomize on dir and decodes every object strictly: an unknown
// field, a duplicate field or an unknown kind fails the test.
func build(t *testing.T, dir string) *manifests {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	m := &manifests{
		deployments:  map[string]*appsv1.Deployment{},
		statefulSets: map[string]*appsv1.StatefulSet{},
		services:     map[string]*corev1.Service{},
		configMaps:   map[string]*corev1.ConfigMap{},
		secrets:      map[string]*corev1.Secret{},
		pdbs:         map[string]*policyv1.PodDisruptionBudget{},
		pvcs:         map[string]*corev1.PersistentVolumeClaim{},
	}
	for _, r := range rm.Resources() {
		kind, name := r.GetKind(), r.GetName()
		data, err := r.AsYAML()
		if err != nil {
			t.Fatalf("%s %s: %v", kind, name, err)
		}
		want, ok := apiVersions[kind]
		if !ok {
			t.Fatalf("%s: %s %s: unexpected kind", dir, kind, name)
		}
		if got := r.GetApiVersion(); got != want {
			t.Errorf("%s %s: apiVersion %s, want %s", kind, name, got, want)
		}
		var obj any
		switch kind {
		case "Deployment":
			o := &appsv1.Deployment{}
			m.deployments[name], obj = o, o
		case "StatefulSet":
			o := &appsv1.StatefulSet{}
			m.statefulSets[name], obj = o, o
		case "Service":
			o := &corev1.Service{}
			m.services[name], obj = o, o
		case "ConfigMap":
			o := &corev1.ConfigMap{}
			m.configMaps[name], obj = o, o
		case "Secret":
			o := &corev1.Secret{}
			m.secrets[name], obj = o, o
		case "PodDisruptionBudget":
			o := &policyv1.PodDisruptionBudget{}
			m.pdbs[name], obj = o, o
		case "PersistentVolumeClaim":
			o := &corev1.PersistentVolumeClaim{}
			m.pvcs[name], obj = o, o
		}
		if err := decodeStrict(data, obj); err != nil {
			t.Fatalf("%s %s: %v", kind, name, err)
		}
	}
	return m
}

// decodeStrict decodes YAML as the API server's strict field validation
// does: field names match case-sensitively, and an unknown or duplicate
// field is an error.
func decodeStrict(data []byte, v any) error {
	j, err := yaml.YAMLToJSONStrict(data)
	if err != nil {
		return fmt.Errorf("strict decode: %w", err)
	}
	strict, err := sigsjson.UnmarshalStrict(j, v, sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
	if err != nil {
		return fmt.Errorf("strict decode: %w", err)
	}
	if err := errors.Join(strict...); err != nil {
		return fmt.Errorf("strict decode: %w", err)
	}
	return nil
}

// pod is the example app's pod, from its Deployment or StatefulSet, with
// the gcnats sidecar and the settings it starts with.
type pod struct {
	m        *manifests
	deploy   *appsv1.Deployment  // nil when the app is a StatefulSet
	sts      *appsv1.StatefulSet // nil when the app is a Deployment
	template *corev1.PodTemplateSpec
	spec     *corev1.PodSpec
	// claims are the StatefulSet's volumeClaimTemplates by name: a claim
	// of each pod's own, mounted as a volume of that name.
	claims  map[string]*corev1.PersistentVolumeClaim
	sidecar *corev1.Container
	app     *corev1.Container
	env     map[string]string // the sidecar's environment, envFrom resolved
	mounts  map[string]corev1.Volume
}

func sidecarPod(t *testing.T, m *manifests) *pod {
	t.Helper()
	p := &pod{m: m, claims: map[string]*corev1.PersistentVolumeClaim{}}
	d, isDeploy := m.deployments[appName]
	sts, isSts := m.statefulSets[appName]
	switch {
	case isDeploy && isSts:
		t.Fatalf("both a Deployment and a StatefulSet %s", appName)
	case isDeploy:
		p.deploy, p.template = d, &d.Spec.Template
	case isSts:
		p.sts, p.template = sts, &sts.Spec.Template
		for i := range sts.Spec.VolumeClaimTemplates {
			c := &sts.Spec.VolumeClaimTemplates[i]
			p.claims[c.Name] = &corev1.PersistentVolumeClaim{ObjectMeta: c.ObjectMeta, Spec: c.Spec}
		}
	default:
		t.Fatalf("no Deployment or StatefulSet %s", appName)
	}
	p.spec = &p.template.Spec
	for i := range p.spec.Containers {
		c := &p.spec.Containers[i]
		if c.Name == sidecarName {
			t.Fatalf("%s is a regular container; it must be a native sidecar (an init container with restartPolicy Always)", sidecarName)
		}
		if c.Name == "app" {
			p.app = c
		}
	}
	if p.app == nil {
		t.Fatal("no app container")
	}
	for i := range p.spec.InitContainers {
		if c := &p.spec.InitContainers[i]; c.Name == sidecarName {
			p.sidecar = c
		}
	}
	if p.sidecar == nil {
		t.Fatalf("no init container %s", sidecarName)
	}
	if rp := p.sidecar.RestartPolicy; rp == nil || *rp != corev1.ContainerRestartPolicyAlways {
		t.Fatalf("%s: restartPolicy %v, want Always (a native sidecar)", sidecarName, show(rp))
	}
	p.env = resolveEnv(t, m, p.sidecar)
	volumes := map[string]corev1.Volume{}
	for _, v := range p.spec.Volumes {
		if _, dup := volumes[v.Name]; dup {
			t.Errorf("volume %s declared twice", v.Name)
		}
		volumes[v.Name] = v
	}
	for name := range p.claims {
		if _, dup := volumes[name]; dup {
			t.Errorf("volume %s is both a pod volume and a volumeClaimTemplate", name)
		}
		volumes[name] = corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: name},
		}}
	}
	p.mounts = map[string]corev1.Volume{}
	for _, c := range append(slices.Clone(p.spec.InitContainers), p.spec.Containers...) {
		for _, vm := range c.VolumeMounts {
			v, ok := volumes[vm.Name]
			if !ok {
				t.Errorf("%s mounts volume %s, which the pod does not declare", c.Name, vm.Name)
				continue
			}
			if c.Name == sidecarName {
				p.mounts[vm.MountPath] = v
			}
		}
	}
	for _, v := range p.spec.Volumes {
		switch {
		case v.Secret != nil:
			if _, ok := m.secrets[v.Secret.SecretName]; !ok {
				t.Errorf("volume %s: no Secret %s in the manifests", v.Name, v.Secret.SecretName)
			}
		case v.ConfigMap != nil:
			if _, ok := m.configMaps[v.ConfigMap.Name]; !ok {
				t.Errorf("volume %s: no ConfigMap %s in the manifests", v.Name, v.ConfigMap.Name)
			}
		case v.PersistentVolumeClaim != nil:
			if _, ok := m.pvcs[v.PersistentVolumeClaim.ClaimName]; !ok {
				t.Errorf("volume %s: no PersistentVolumeClaim %s in the manifests", v.Name, v.PersistentVolumeClaim.ClaimName)
			}
		}
	}
	return p
}

// resolveEnv is a container's environment as the kubelet would set it:
// envFrom ConfigMaps first, then env, which wins. Values from the downward
// API resolve to "".
func resolveEnv(t *testing.T, m *manifests, c *corev1.Container) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, from := range c.EnvFrom {
		if from.ConfigMapRef == nil || from.Prefix != "" {
			t.Fatalf("%s: envFrom %+v: only ConfigMaps without a prefix are expected", c.Name, from)
		}
		cm, ok := m.configMaps[from.ConfigMapRef.Name]
		if !ok {
			t.Fatalf("%s: envFrom ConfigMap %s is not in the manifests", c.Name, from.ConfigMapRef.Name)
		}
		for k, v := range cm.Data {
			env[k] = v
		}
	}
	seen := map[string]bool{}
	for _, e := range c.Env {
		if seen[e.Name] {
			t.Errorf("%s: env %s set twice", c.Name, e.Name)
		}
		seen[e.Name] = true
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.ConfigMapKeyRef != nil:
			ref := e.ValueFrom.ConfigMapKeyRef
			v, ok := m.configMaps[ref.Name].Data[ref.Key]
			if !ok {
				t.Errorf("%s: env %s: no key %s in ConfigMap %s", c.Name, e.Name, ref.Key, ref.Name)
			}
			env[e.Name] = v
		case e.ValueFrom.SecretKeyRef != nil:
			t.Errorf("%s: env %s comes from a Secret; secrets are mounted as files (the _FILE settings) so they never show in the pod spec's environment", c.Name, e.Name)
		default:
			env[e.Name] = ""
		}
	}
	return env
}

func (p *pod) setting(name, def string) string {
	if v, ok := p.env[name]; ok {
		return v
	}
	return def
}

// httpPort is the sidecar's container port that GCNATS_HTTP_ADDR listens on.
func (p *pod) httpPort(t *testing.T) int32 {
	t.Helper()
	_, port, err := net.SplitHostPort(p.setting("GCNATS_HTTP_ADDR", defaultHTTP))
	if err != nil {
		t.Fatalf("GCNATS_HTTP_ADDR: %v", err)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatalf("GCNATS_HTTP_ADDR port %q: %v", port, err)
	}
	return int32(n)
}

// probePort resolves a probe's port, named or numbered, on the sidecar.
func (p *pod) probePort(t *testing.T, port intstr.IntOrString) int32 {
	t.Helper()
	if port.Type == intstr.Int {
		return port.IntVal
	}
	for _, cp := range p.sidecar.Ports {
		if cp.Name == port.StrVal {
			return cp.ContainerPort
		}
	}
	t.Fatalf("probe port %q is not a named port of %s", port.StrVal, sidecarName)
	return 0
}

// mountFor returns the volume mounted on the sidecar at the directory that
// holds file, and the file's name inside it.
func (p *pod) mountFor(file string) (corev1.Volume, string, bool) {
	for dir, v := range p.mounts {
		if rel, ok := strings.CutPrefix(file, strings.TrimSuffix(dir, "/")+"/"); ok && !strings.Contains(rel, "/") {
			return v, rel, true
		}
	}
	return corev1.Volume{}, "", false
}

// keyFor maps a file name in a ConfigMap or Secret volume to its key,
// honouring items.
func keyFor(items []corev1.KeyToPath, file string) string {
	if len(items) == 0 {
		return file
	}
	for _, it := range items {
		if it.Path == file {
			return it.Key
		}
	}
	return ""
}

// checkSidecar asserts what every kustomization shares: the native sidecar,
// its probes, security, resources, settings and mounts.
func checkSidecar(t *testing.T, p *pod) {
	c := p.sidecar
	if img := c.Image; img != "gcnats" && !strings.HasPrefix(img, "gcnats:") && !strings.Contains(img, "/gcnats:") {
		t.Errorf("%s image %q is not gcnats", sidecarName, img)
	}

	// Settings: every name is one gcnats reads.
	known := settingsEnv(t)
	for name := range p.env {
		if _, ok := known[name]; !ok && !slices.Contains(goRuntimeEnv, name) {
			t.Errorf("%s: env %s is not a gcnats setting (not in Settings in ../settings.go)", sidecarName, name)
		}
	}
	for _, name := range []string{"GENESYSCLOUD_REGION", "GCNATS_TOPICS"} {
		if strings.TrimSpace(p.env[name]) == "" {
			t.Errorf("%s: %s is not set", sidecarName, name)
		}
	}

	// Probes on the HTTP endpoints.
	port := p.httpPort(t)
	var named bool
	for _, cp := range c.Ports {
		if cp.ContainerPort == port && cp.Name == "http" {
			named = true
		}
	}
	if !named {
		t.Errorf("%s: no container port named http on %d (GCNATS_HTTP_ADDR)", sidecarName, port)
	}
	for _, pr := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{
		{"livenessProbe", c.LivenessProbe, "/healthz"},
		{"readinessProbe", c.ReadinessProbe, "/readyz"},
		// /healthz answers before NATS does; /startupz only once apps can
		// connect and the streams exist, so the app starts after that.
		{"startupProbe", c.StartupProbe, "/startupz"},
	} {
		if pr.probe == nil || pr.probe.HTTPGet == nil {
			t.Errorf("%s: %s: want an httpGet probe on %s", sidecarName, pr.name, pr.path)
			continue
		}
		if got := pr.probe.HTTPGet.Path; got != pr.path {
			t.Errorf("%s: %s path %s, want %s", sidecarName, pr.name, got, pr.path)
		}
		if got := p.probePort(t, pr.probe.HTTPGet.Port); got != port {
			t.Errorf("%s: %s port %d, want %d (GCNATS_HTTP_ADDR)", sidecarName, pr.name, got, port)
		}
	}

	// Metrics scraped from the same port.
	ann := p.template.Annotations
	for k, want := range map[string]string{
		"prometheus.io/scrape": "true",
		"prometheus.io/port":   strconv.Itoa(int(port)),
		"prometheus.io/path":   "/metrics",
	} {
		if got := ann[k]; got != want {
			t.Errorf("pod annotation %s = %q, want %q", k, got, want)
		}
	}

	// Security: the container's context wins over the pod's.
	sc, psc := c.SecurityContext, p.spec.SecurityContext
	if sc == nil {
		t.Fatalf("%s: no securityContext", sidecarName)
	}
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	runAsNonRoot := cmpOr(sc.RunAsNonRoot, psc.RunAsNonRoot)
	runAsUser := cmpOr(sc.RunAsUser, psc.RunAsUser)
	seccomp := cmpOr(sc.SeccompProfile, psc.SeccompProfile)
	if runAsNonRoot == nil || !*runAsNonRoot {
		t.Errorf("%s: runAsNonRoot is not true", sidecarName)
	}
	if runAsUser == nil || *runAsUser != nonrootUID {
		t.Errorf("%s: runAsUser %v, want %d (the image's nonroot user)", sidecarName, show(runAsUser), nonrootUID)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("%s: readOnlyRootFilesystem is not true", sidecarName)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("%s: allowPrivilegeEscalation is not false", sidecarName)
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Errorf("%s: privileged", sidecarName)
	}
	if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
		t.Errorf("%s: capabilities %+v, want drop [ALL] and nothing added", sidecarName, sc.Capabilities)
	}
	if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: seccompProfile %+v, want RuntimeDefault", sidecarName, seccomp)
	}

	// Requests and limits for CPU and memory.
	for _, rl := range []struct {
		name string
		list corev1.ResourceList
	}{{"requests", c.Resources.Requests}, {"limits", c.Resources.Limits}} {
		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			if q, ok := rl.list[r]; !ok || q.Sign() <= 0 {
				t.Errorf("%s: resources.%s.%s not set", sidecarName, rl.name, r)
			}
		}
	}
	// GCNATS_BUFFER_BYTES is held in memory until acked: the limit must
	// leave room for it.
	buf := parseBytes(t, p.setting("GCNATS_BUFFER_BYTES", "64MiB"))
	if limit := c.Resources.Limits[corev1.ResourceMemory]; limit.Cmp(*resource.NewQuantity(2*buf, resource.BinarySI)) < 0 {
		t.Errorf("%s: memory limit %s is less than twice GCNATS_BUFFER_BYTES (%d)", sidecarName, limit.String(), buf)
	}

	// The grace period covers the flush on shutdown.
	timeout, err := time.ParseDuration(p.setting("GCNATS_SHUTDOWN_TIMEOUT", "20s"))
	if err != nil {
		t.Fatalf("GCNATS_SHUTDOWN_TIMEOUT: %v", err)
	}
	if g := p.spec.TerminationGracePeriodSeconds; g == nil || time.Duration(*g)*time.Second <= timeout {
		t.Errorf("terminationGracePeriodSeconds %v does not exceed GCNATS_SHUTDOWN_TIMEOUT %s", show(g), timeout)
	}

	// Credentials come from files in the mounted Secret, never from values.
	for _, name := range []string{"GENESYSCLOUD_OAUTHCLIENT_ID", "GENESYSCLOUD_OAUTHCLIENT_SECRET"} {
		if _, ok := p.env[name]; ok {
			t.Errorf("%s: %s is set directly; use %s_FILE and the mounted Secret", sidecarName, name, name)
		}
		if _, ok := p.env[name+"_FILE"]; !ok {
			t.Errorf("%s: %s_FILE is not set", sidecarName, name)
		}
	}
	for name, file := range p.env {
		if !known[name] { // not a secret read from a file
			continue
		}
		if !strings.HasPrefix(file, secretsRoot) {
			t.Errorf("%s: %s=%s is not in a mounted secret directory under %s", sidecarName, name, file, secretsRoot)
		}
		v, base, ok := p.mountFor(file)
		if !ok || v.Secret == nil {
			t.Errorf("%s: %s=%s: no Secret volume mounted at %s", sidecarName, name, file, path.Dir(file))
			continue
		}
		secret := p.m.secrets[v.Secret.SecretName]
		key := keyFor(v.Secret.Items, base)
		if secret == nil || key == "" || (secret.Data[key] == nil && secret.StringData[key] == "") {
			t.Errorf("%s: %s=%s: Secret %s has no key for %s", sidecarName, name, file, v.Secret.SecretName, base)
			continue
		}
		// The example Secret must never carry real credentials.
		if val := string(secret.Data[key]) + secret.StringData[key]; !strings.Contains(val, "REPLACE-ME") {
			t.Errorf("Secret %s key %s does not hold a REPLACE-ME placeholder: keep real credentials out of the repository", v.Secret.SecretName, key)
		}
	}

	// The routes file comes from a mounted ConfigMap and uses only the
	// documented keys.
	routes := p.env["GCNATS_ROUTES_FILE"]
	v, base, ok := p.mountFor(routes)
	if routes == "" || !ok || v.ConfigMap == nil {
		t.Errorf("%s: GCNATS_ROUTES_FILE=%q is not a file in a mounted ConfigMap", sidecarName, routes)
	} else {
		cm := p.m.configMaps[v.ConfigMap.Name]
		data, ok := cm.Data[keyFor(v.ConfigMap.Items, base)]
		if !ok {
			t.Errorf("ConfigMap %s has no key for %s", v.ConfigMap.Name, base)
		} else {
			checkRoutes(t, data)
		}
	}
	for dir, v := range p.mounts {
		if strings.HasPrefix(secretDir, dir) && v.Secret == nil {
			t.Errorf("%s: %s is mounted over the secret directory", sidecarName, dir)
		}
	}
}

// checkRoutes decodes a routes file with only the keys the subjects
// package documents.
func checkRoutes(t *testing.T, data string) {
	t.Helper()
	type filter struct {
		Field     string `json:"field"`
		Equals    any    `json:"equals,omitempty"`
		NotEquals any    `json:"not_equals,omitempty"`
		OneOf     []any  `json:"one_of,omitempty"`
		Exists    *bool  `json:"exists,omitempty"`
	}
	var file struct {
		Routes []struct {
			Topic   string   `json:"topic"`
			Subject string   `json:"subject,omitempty"`
			Stream  string   `json:"stream,omitempty"`
			Filter  []filter `json:"filter,omitempty"`
			Drop    bool     `json:"drop,omitempty"`
		} `json:"routes"`
	}
	if err := decodeStrict([]byte(data), &file); err != nil {
		t.Errorf("routes.yaml: %v", err)
		return
	}
	if len(file.Routes) == 0 {
		t.Error("routes.yaml: no routes")
	}
	for i, r := range file.Routes {
		if r.Topic == "" {
			t.Errorf("routes.yaml: route %d: no topic", i+1)
		}
		for j, f := range r.Filter {
			ops := 0
			for _, set := range []bool{f.Equals != nil, f.NotEquals != nil, f.OneOf != nil, f.Exists != nil} {
				if set {
					ops++
				}
			}
			if f.Field == "" || ops != 1 {
				t.Errorf("routes.yaml: route %d filter %d: want a field and exactly one operator", i+1, j+1)
			}
		}
	}
}

func checkMounts(t *testing.T, p *pod, want ...string) {
	t.Helper()
	var got []string
	for dir := range p.mounts {
		got = append(got, dir)
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s mounts %v, want %v", sidecarName, got, want)
	}
}

func TestBase(t *testing.T) {
	p := sidecarPod(t, build(t, "base"))
	checkSidecar(t, p)
	checkMounts(t, p, secretDir, path.Dir(p.env["GCNATS_ROUTES_FILE"]))
}

func TestEmbedded(t *testing.T) {
	m := build(t, "overlays/embedded")
	p := sidecarPod(t, m)
	checkSidecar(t, p)
	checkEmbedded(t, m, p)
	for name := range p.env {
		if strings.HasPrefix(name, "GCNATS_LEAF_") || strings.HasPrefix(name, "GCNATS_HUB_") {
			t.Errorf("%s is set: the embedded overlay runs no leaf node", name)
		}
	}
}

// checkEmbedded asserts an overlay where gcnats runs JetStream in the pod:
// the store on a claim one pod holds, the app on the pod's loopback.
// extraMounts are the sidecar's mounts beyond the base's and the store.
func checkEmbedded(t *testing.T, m *manifests, p *pod, extraMounts ...string) {
	t.Helper()
	if u, ok := p.env["NATS_URL"]; ok {
		t.Errorf("NATS_URL=%q: the overlay must leave it unset so gcnats starts JetStream", u)
	}

	store := p.env["GCNATS_STORE_DIR"]
	if store == "" {
		t.Fatal("GCNATS_STORE_DIR is not set; the default ./data is on the read-only root filesystem")
	}
	checkMounts(t, p, append([]string{secretDir, path.Dir(p.env["GCNATS_ROUTES_FILE"]), store}, extraMounts...)...)
	v := p.mounts[store]
	if v.PersistentVolumeClaim == nil {
		t.Fatalf("GCNATS_STORE_DIR %s is on volume %s, not a PersistentVolumeClaim", store, v.Name)
	}
	pvc, perPod := p.claims[v.Name]
	if !perPod {
		pvc = m.pvcs[v.PersistentVolumeClaim.ClaimName]
	}
	if pvc == nil || !slices.Contains(pvc.Spec.AccessModes, corev1.ReadWriteOnce) {
		t.Errorf("PersistentVolumeClaim %s: want ReadWriteOnce", v.PersistentVolumeClaim.ClaimName)
	} else if q := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; q.Sign() <= 0 {
		t.Errorf("PersistentVolumeClaim %s: no storage request", pvc.Name)
	}
	for _, c := range p.spec.Containers {
		for _, vm := range c.VolumeMounts {
			if vm.Name == v.Name {
				t.Errorf("%s also mounts the store; only gcnats may", c.Name)
			}
		}
	}

	// One pod holds a ReadWriteOnce store at a time: a Deployment's
	// pods share one claim, so one replica, replaced only once it is gone;
	// a StatefulSet's pods have a claim each.
	switch {
	case p.deploy != nil:
		if r := p.deploy.Spec.Replicas; r == nil || *r != 1 {
			t.Errorf("replicas %v, want 1", show(r))
		}
		if s := p.deploy.Spec.Strategy.Type; s != appsv1.RecreateDeploymentStrategyType {
			t.Errorf("strategy %q, want Recreate", s)
		}
	case !perPod:
		t.Errorf("GCNATS_STORE_DIR %s is on the shared claim %s: every pod of the StatefulSet needs its own, from volumeClaimTemplates", store, v.PersistentVolumeClaim.ClaimName)
	}

	// The app reaches the embedded server on the pod's loopback.
	listen := p.setting("GCNATS_EMBEDDED_LISTEN", defaultListen)
	host, port, err := net.SplitHostPort(listen)
	if err != nil {
		t.Fatalf("GCNATS_EMBEDDED_LISTEN=%q: %v", listen, err)
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		t.Errorf("GCNATS_EMBEDDED_LISTEN=%q: want a loopback address; the server has no auth", listen)
	}
	app := resolveEnv(t, m, p.app)
	u, err := url.Parse(app["NATS_URL"])
	if err != nil || u.Scheme != "nats" || (u.Hostname() != "localhost" && u.Hostname() != host) || u.Port() != port {
		t.Errorf("app NATS_URL=%q, want nats://localhost:%s", app["NATS_URL"], port)
	}
}

// domainRE is what a JetStream domain may hold (gcnats' validDomain).
var domainRE = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

func TestEdge(t *testing.T) {
	m := build(t, "overlays/edge")
	p := sidecarPod(t, m)
	checkSidecar(t, p)
	checkEmbedded(t, m, p, leafSecretDir)

	// The hub's leaf node port, without credentials in the URL.
	remote := p.env["GCNATS_LEAF_REMOTE"]
	if remote == "" {
		t.Fatal("GCNATS_LEAF_REMOTE is not set")
	}
	for raw := range strings.SplitSeq(remote, ",") {
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil || u.Host == "" || !slices.Contains([]string{"nats-leaf", "nats", "tls", "ws", "wss"}, u.Scheme) {
			t.Errorf("GCNATS_LEAF_REMOTE=%q: want URLs such as nats-leaf://hub:7422", remote)
		} else if u.User != nil {
			t.Errorf("GCNATS_LEAF_REMOTE=%q carries credentials; they belong in the Secret", remote)
		}
	}

	// Each pod needs a JetStream domain of its own, the same across its
	// restarts: the hub takes one leaf link per domain and keys each
	// edge's source by it. A Deployment's pods share their settings (one
	// fixed domain for all of them) and get new names on every rollout
	// (a new domain from HOSTNAME each time); a StatefulSet's pod names
	// are distinct and stable, so the default domain, the pod's name,
	// suits any number of replicas.
	sts := p.sts
	if sts == nil {
		t.Fatalf("the edge overlay runs a Deployment: scaled to two pods, both take one domain and the hub accepts one leaf link; want a StatefulSet whose pods take their domain from their names")
	}
	for _, name := range []string{"GCNATS_JS_DOMAIN", "HOSTNAME"} {
		if v, ok := p.env[name]; ok {
			t.Errorf("%s=%q: every pod would take one domain; leave it unset so each pod's domain is its name", name, v)
		}
	}
	replicas := int32(1)
	if sts.Spec.Replicas != nil {
		replicas = *sts.Spec.Replicas
	}
	if replicas < 2 {
		t.Errorf("StatefulSet %s replicas %d, want at least 2: an edge that rides out a pod's loss", sts.Name, replicas)
	}
	hubDomain := p.setting("GCNATS_HUB_DOMAIN", "hub")
	domains := map[string]bool{}
	for i := range replicas + 1 { // one more: scaling up is safe too
		domain := domainFrom(fmt.Sprintf("%s-%d", sts.Name, i))
		if !domainRE.MatchString(domain) || domain == hubDomain || domains[domain] {
			t.Errorf("pod %s-%d: domain %q is invalid, the hub's, or another pod's", sts.Name, i, domain)
		}
		domains[domain] = true
	}
	if !domainRE.MatchString(hubDomain) {
		t.Errorf("GCNATS_HUB_DOMAIN=%q: want a valid domain", hubDomain)
	}
	if svc := m.services[sts.Spec.ServiceName]; svc == nil || svc.Spec.ClusterIP != corev1.ClusterIPNone || !selects(svc.Spec.Selector, sts.Spec.Template.Labels) {
		t.Errorf("StatefulSet %s serviceName %q: want a headless Service selecting its pods", sts.Name, sts.Spec.ServiceName)
	}
	if sel := sts.Spec.Selector; sel == nil || !selects(sel.MatchLabels, sts.Spec.Template.Labels) {
		t.Errorf("StatefulSet %s: its selector does not select its pods", sts.Name)
	}
	if hs := p.env["GCNATS_HUB_STREAM"]; hs == "" || strings.ContainsAny(hs, " .*>/\\") {
		t.Errorf("GCNATS_HUB_STREAM=%q: want the hub stream's name", hs)
	}

	// The hub's credentials come from a mounted Secret, as files.
	for _, name := range []string{"GCNATS_LEAF_USER", "GCNATS_LEAF_PASSWORD"} {
		if _, ok := p.env[name]; ok {
			t.Errorf("%s is set directly; use %s_FILE and the mounted Secret", name, name)
		}
		file := p.env[name+"_FILE"]
		if v, _, ok := p.mountFor(file); !ok || v.Secret == nil || !strings.HasPrefix(file, leafSecretDir+"/") {
			t.Errorf("%s_FILE=%q: want a file of the Secret mounted at %s", name, file, leafSecretDir)
		}
	}

	// The local stream is the buffer: it must outlast the outages the link
	// is expected to ride out.
	maxAge, err := time.ParseDuration(p.setting("GCNATS_STREAM_MAX_AGE", "168h"))
	if err != nil || maxAge < 24*time.Hour {
		t.Errorf("GCNATS_STREAM_MAX_AGE=%q: want at least 24h, longer than the longest leaf link outage", p.env["GCNATS_STREAM_MAX_AGE"])
	}
	// And the hub stream's duplicate window must cover the buffer: after
	// one pod's outage, its copies reach the hub that much later than the
	// other pod's.
	if w, ok := p.env["GCNATS_HUB_DEDUP_WINDOW"]; ok {
		if d, err := time.ParseDuration(w); err != nil || d < maxAge {
			t.Errorf("GCNATS_HUB_DEDUP_WINDOW=%q: shorter than GCNATS_STREAM_MAX_AGE %s; leave it unset to follow it", w, maxAge)
		}
	}
}

func TestCluster(t *testing.T) {
	m := build(t, "overlays/cluster")
	p := sidecarPod(t, m)
	checkSidecar(t, p)
	checkMounts(t, p, secretDir, path.Dir(p.env["GCNATS_ROUTES_FILE"]))

	if len(m.statefulSets) != 1 {
		t.Fatalf("%d StatefulSets, want the NATS one", len(m.statefulSets))
	}
	var sts *appsv1.StatefulSet
	for _, s := range m.statefulSets {
		sts = s
	}
	if r := sts.Spec.Replicas; r == nil || *r != 3 {
		t.Fatalf("StatefulSet %s replicas %v, want 3", sts.Name, show(r))
	}
	if len(sts.Spec.Template.Spec.Containers) != 1 || !strings.HasPrefix(sts.Spec.Template.Spec.Containers[0].Image, "nats:2.") {
		t.Errorf("StatefulSet %s: want one nats:2.x container", sts.Name)
	}
	podLabels := sts.Spec.Template.Labels
	if len(sts.Spec.VolumeClaimTemplates) == 0 {
		t.Errorf("StatefulSet %s: no volumeClaimTemplates for the JetStream file store", sts.Name)
	}

	// The headless Service gives the pods the names the routes use.
	headless := m.services[sts.Spec.ServiceName]
	if headless == nil || headless.Spec.ClusterIP != corev1.ClusterIPNone || !headless.Spec.PublishNotReadyAddresses {
		t.Errorf("StatefulSet serviceName %q: want a headless Service publishing not-ready addresses", sts.Spec.ServiceName)
	}

	// nats.conf: JetStream on the file store volume, and a route to each pod.
	var conf string
	for _, v := range sts.Spec.Template.Spec.Volumes {
		if v.ConfigMap != nil {
			for k, d := range m.configMaps[v.ConfigMap.Name].Data {
				if strings.HasSuffix(k, ".conf") {
					conf = d
				}
			}
		}
	}
	if !strings.Contains(conf, "jetstream {") || !strings.Contains(conf, "store_dir:") || !strings.Contains(conf, "cluster {") {
		t.Errorf("nats.conf does not enable jetstream with a store_dir and a cluster block:\n%s", conf)
	}
	for i := range 3 {
		route := fmt.Sprintf("nats://%s-%d.%s:6222", sts.Name, i, sts.Spec.ServiceName)
		if !strings.Contains(conf, route) {
			t.Errorf("nats.conf has no route %s", route)
		}
	}

	// One server down at a time keeps a quorum of three.
	var pdb *policyv1.PodDisruptionBudget
	for _, b := range m.pdbs {
		if b.Spec.Selector != nil && selects(b.Spec.Selector.MatchLabels, podLabels) {
			pdb = b
		}
	}
	if pdb == nil {
		t.Fatal("no PodDisruptionBudget selects the NATS pods")
	}
	if mu := pdb.Spec.MaxUnavailable; mu == nil || *mu != intstr.FromInt32(1) {
		t.Errorf("PodDisruptionBudget %s maxUnavailable %v, want 1", pdb.Name, mu)
	}

	// gcnats and the app name every NATS pod, as TestClusterFailover in
	// the sidecar's tests does: whichever node is down, the client dials
	// another, by a name that survives the pod's new IP. The pod names
	// resolve through the headless Service, not-ready pods too.
	natsURL := p.env["NATS_URL"]
	var named []string
	for raw := range strings.SplitSeq(natsURL, ",") {
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil || u.Scheme != "nats" {
			t.Fatalf("NATS_URL=%q: want nats:// URLs", natsURL)
		}
		if u.Port() != "4222" {
			t.Errorf("NATS_URL=%q: %s is not on the client port 4222", natsURL, u.Host)
		}
		pod, svc, _ := strings.Cut(u.Hostname(), ".")
		if svc != sts.Spec.ServiceName || !strings.HasPrefix(pod, sts.Name+"-") {
			t.Errorf("NATS_URL=%q: %s is not a pod of StatefulSet %s under Service %s", natsURL, u.Hostname(), sts.Name, sts.Spec.ServiceName)
		}
		named = append(named, pod)
	}
	for i := range 3 {
		if pod := fmt.Sprintf("%s-%d", sts.Name, i); !slices.Contains(named, pod) {
			t.Errorf("NATS_URL=%q does not name %s", natsURL, pod)
		}
	}
	if !slices.ContainsFunc(headless.Spec.Ports, func(sp corev1.ServicePort) bool { return sp.Port == 4222 }) {
		t.Errorf("Service %s has no client port 4222", headless.Name)
	}
	// A rolling update of the StatefulSet takes the next pod only once
	// the last is ready, and a pod is ready only after its startupProbe,
	// nats-server's full /healthz, saw its streams caught up: each node
	// back and current before the next goes, as the test's rolling
	// restart does.
	nc := sts.Spec.Template.Spec.Containers[0]
	if sp := nc.StartupProbe; sp == nil || sp.HTTPGet == nil || sp.HTTPGet.Path != "/healthz" {
		t.Errorf("StatefulSet %s: want a startupProbe on nats-server's full /healthz (streams current)", sts.Name)
	}
	if st := sts.Spec.UpdateStrategy.Type; st != "" && st != appsv1.RollingUpdateStatefulSetStrategyType {
		t.Errorf("StatefulSet %s: updateStrategy %s, want RollingUpdate", sts.Name, st)
	}
	if app := resolveEnv(t, m, p.app); app["NATS_URL"] != natsURL {
		t.Errorf("app NATS_URL=%q, want gcnats' %q", app["NATS_URL"], natsURL)
	}
	if r := p.env["GCNATS_STREAM_REPLICAS"]; r != "3" {
		t.Errorf("GCNATS_STREAM_REPLICAS=%q, want 3", r)
	}
}

// selects reports whether a label selector picks pods with labels.
func selects(selector, labels map[string]string) bool {
	if len(selector) == 0 {
		return false
	}
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// show prints what a pointer field holds, or "unset".
func show[T any](p *T) any {
	if p == nil {
		return "unset"
	}
	return *p
}

func cmpOr[T any](a, b *T) *T {
	if a != nil {
		return a
	}
	return b
}

// parseBytes reads a GCNATS_BUFFER_BYTES value as gcnats does.
func parseBytes(t *testing.T, s string) int64 {
	t.Helper()
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}} {
		if rest, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = strings.TrimSpace(rest), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("GCNATS_BUFFER_BYTES=%q: %v", s, err)
	}
	return n * mult
}

// domainFrom is gcnats' default JetStream domain for a pod named hostname
// (domainFrom in ../settings.go): lower case, with every character a
// domain may not hold made '_'.
func domainFrom(hostname string) string {
	d := []rune(strings.ToLower(hostname))
	for i, r := range d {
		if !domainRE.MatchString(string(r)) {
			d[i] = '_'
		}
	}
	return string(d)
}
