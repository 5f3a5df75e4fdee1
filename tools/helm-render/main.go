// helm-render: renders a Helm chart the way `helm template` does, for the functions Braid's chart
// uses. Helm is not in Debian's archive; this is Go's text/template with sprig (both Debian
// packages) plus Helm's own additions: include, tpl, required, toYaml, fromYaml, .Files.Get and
// the .Values/.Release/.Chart/.Template objects.
//
// Usage: helm-render [-f values.yaml]... [--set a.b=c]... [--name release] [--namespace ns] CHART
// Output: the rendered manifests on stdout, each after "---" and a "# Source:" line, empty
// documents left out (as helm does). Exit 1 with the template error otherwise.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig/v3"
	"gopkg.in/yaml.v3"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// files gives templates .Files.Get, relative to the chart's directory.
type files struct{ dir string }

func (f files) Get(name string) string {
	b, err := os.ReadFile(filepath.Join(f.dir, name))
	if err != nil {
		return ""
	}
	return string(b)
}

func toYaml(v interface{}) string {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(v); err != nil {
		return ""
	}
	return strings.TrimSuffix(buf.String(), "\n")
}

func fromYaml(s string) map[string]interface{} {
	out := map[string]interface{}{}
	if err := yaml.Unmarshal([]byte(s), &out); err != nil {
		out["Error"] = err.Error()
	}
	return out
}

func merge(dst, src map[string]interface{}) {
	for k, v := range src {
		if sm, ok := v.(map[string]interface{}); ok {
			if dm, ok := dst[k].(map[string]interface{}); ok {
				merge(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
}

func parseScalar(s string) interface{} {
	if s == "true" || s == "false" {
		return s == "true"
	}
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		return i
	}
	return s
}

func setPath(values map[string]interface{}, path string, value interface{}) {
	keys := strings.Split(path, ".")
	m := values
	for _, k := range keys[:len(keys)-1] {
		next, ok := m[k].(map[string]interface{})
		if !ok {
			next = map[string]interface{}{}
			m[k] = next
		}
		m = next
	}
	m[keys[len(keys)-1]] = value
}

func readYaml(path string) (map[string]interface{}, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string]interface{}{}
	if err := yaml.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	return out, nil
}

func main() {
	var valueFiles, sets listFlag
	flag.Var(&valueFiles, "f", "values file (repeatable, later wins)")
	flag.Var(&sets, "set", "key.path=value (repeatable)")
	name := flag.String("name", "braid", "release name")
	namespace := flag.String("namespace", "default", "release namespace")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: helm-render [-f values.yaml] [--set k=v] CHART")
		os.Exit(2)
	}
	chartDir := flag.Arg(0)
	if err := run(chartDir, valueFiles, sets, *name, *namespace); err != nil {
		fmt.Fprintln(os.Stderr, "helm-render:", err)
		os.Exit(1)
	}
}

func run(chartDir string, valueFiles, sets []string, release, namespace string) error {
	chart, err := readYaml(filepath.Join(chartDir, "Chart.yaml"))
	if err != nil {
		return err
	}
	values, err := readYaml(filepath.Join(chartDir, "values.yaml"))
	if err != nil {
		return err
	}
	for _, f := range valueFiles {
		v, err := readYaml(f)
		if err != nil {
			return err
		}
		merge(values, v)
	}
	for _, s := range sets {
		kv := strings.SplitN(s, "=", 2)
		if len(kv) != 2 {
			return fmt.Errorf("--set %q: want key=value", s)
		}
		setPath(values, kv[0], parseScalar(kv[1]))
	}
	chartName := fmt.Sprint(chart["name"])
	chartObj := map[string]interface{}{
		"Name": chartName, "Version": fmt.Sprint(chart["version"]),
		"AppVersion": fmt.Sprint(chart["appVersion"]), "Description": chart["description"],
	}

	root := template.New(chartName)
	funcs := sprig.TxtFuncMap()
	funcs["toYaml"] = toYaml
	funcs["fromYaml"] = fromYaml
	funcs["include"] = func(name string, data interface{}) (string, error) {
		var buf bytes.Buffer
		err := root.ExecuteTemplate(&buf, name, data)
		return buf.String(), err
	}
	funcs["tpl"] = func(text string, data interface{}) (string, error) {
		t, err := root.Clone()
		if err != nil {
			return "", err
		}
		t, err = t.New("tpl").Parse(text)
		if err != nil {
			return "", err
		}
		var buf bytes.Buffer
		err = t.Execute(&buf, data)
		return buf.String(), err
	}
	funcs["required"] = func(msg string, v interface{}) (interface{}, error) {
		if v == nil || v == "" {
			return nil, fmt.Errorf("%s", msg)
		}
		return v, nil
	}
	funcs["lookup"] = func(...interface{}) map[string]interface{} { return map[string]interface{}{} }
	root.Funcs(funcs).Option("missingkey=zero")

	tplDir := filepath.Join(chartDir, "templates")
	entries, err := os.ReadDir(tplDir)
	if err != nil {
		return err
	}
	var names []string
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(tplDir, e.Name()))
		if err != nil {
			return err
		}
		full := chartName + "/templates/" + e.Name()
		if _, err := root.New(full).Parse(string(b)); err != nil {
			return err
		}
		if !strings.HasPrefix(e.Name(), "_") && (strings.HasSuffix(e.Name(), ".yaml") ||
			strings.HasSuffix(e.Name(), ".yml")) {
			names = append(names, full)
		}
	}
	sort.Strings(names)
	var out bytes.Buffer
	for _, full := range names {
		data := map[string]interface{}{
			"Values":  values,
			"Chart":   chartObj,
			"Release": map[string]interface{}{"Name": release, "Namespace": namespace, "Service": "Helm", "IsInstall": true},
			"Files":   files{chartDir},
			"Template": map[string]interface{}{
				"Name": full, "BasePath": chartName + "/templates",
			},
			"Capabilities": map[string]interface{}{"KubeVersion": map[string]interface{}{"Version": "v1.28.0"}},
		}
		var buf bytes.Buffer
		if err := root.ExecuteTemplate(&buf, full, data); err != nil {
			return err
		}
		doc := strings.ReplaceAll(buf.String(), "<no value>", "")
		if strings.TrimSpace(doc) == "" {
			continue
		}
		fmt.Fprintf(&out, "---\n# Source: %s\n%s\n", full, strings.Trim(doc, "\n"))
	}
	_, err = os.Stdout.Write(out.Bytes())
	return err
}
