package events

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
)

func newValidator(t testing.TB, opts ...ValidatorOption) *Validator {
	t.Helper()
	v, err := NewValidator(opts...)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// decodeFixture reads a structured-mode event the way a consumer receives it.
func decodeFixture(t *testing.T, path string) (Event, error) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg("openagent.requests.test")
	m.Header.Set("Content-Type", "application/cloudevents+json")
	m.Data = b
	return FromMsg(m)
}

func TestGoldenValid(t *testing.T) {
	v := newValidator(t)
	files, _ := filepath.Glob("testdata/events/valid/*.json")
	if len(files) == 0 {
		t.Fatal("no valid fixtures")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			e, err := decodeFixture(t, f)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if err := v.Validate(e); err != nil {
				t.Fatalf("got %v; want valid", err)
			}
			if _, err := Subject(e); err != nil {
				t.Fatalf("subject: %v", err)
			}
		})
	}
}

func TestGoldenInvalid(t *testing.T) {
	v := newValidator(t)
	var want map[string]struct{ Field, Rule string }
	b, err := os.ReadFile("testdata/events/invalid-want.json")
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &want); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob("testdata/events/invalid/*.json")
	if len(files) != len(want) {
		t.Fatalf("got %d invalid fixtures; want %d (one per entry of invalid-want.json)", len(files), len(want))
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".json")
		t.Run(name, func(t *testing.T) {
			w, ok := want[name]
			if !ok {
				t.Fatalf("no expectation for %s in invalid-want.json", name)
			}
			e, err := decodeFixture(t, f)
			if err == nil {
				err = v.Validate(e)
			}
			ve, ok := err.(*ValidationError)
			if !ok {
				t.Fatalf("got %v (%T); want a *ValidationError", err, err)
			}
			if ve.Field != w.Field || ve.Rule != w.Rule {
				t.Fatalf("got field %q rule %q (%v); want field %q rule %q", ve.Field, ve.Rule, ve, w.Field, w.Rule)
			}
			if !strings.Contains(ve.Error(), w.Field) {
				t.Fatalf("message %q does not name the field %q", ve.Error(), w.Field)
			}
		})
	}
}

// Every catalog type has a schema and a valid fixture, and every schema file
// belongs to a catalog type, so the catalog and schemas/ cannot drift apart.
func TestCatalogMatchesSchemas(t *testing.T) {
	schemaFiles, _ := filepath.Glob("../../schemas/*.json")
	have := map[string]bool{}
	for _, f := range schemaFiles {
		have[strings.TrimSuffix(filepath.Base(f), ".json")] = true
	}
	delete(have, "defs")
	for _, typ := range Types() {
		n := Name(typ)
		if !have[n] {
			t.Errorf("type %s has no schema %s.json", typ, n)
		}
		delete(have, n)
		if _, err := os.Stat("testdata/events/valid/" + n + ".json"); err != nil {
			t.Errorf("type %s has no valid fixture", typ)
		}
	}
	for n := range have {
		t.Errorf("schema %s.json belongs to no catalog type", n)
	}
}

func TestSizeCap(t *testing.T) {
	v := newValidator(t, WithMaxSize(2048))
	e, err := New(ContainerExecRequested, "/test", map[string]any{"containerId": "c-1", "command": []string{"sh"}, "stdin": strings.Repeat("x", 4096)})
	if err != nil {
		t.Fatal(err)
	}
	m, err := ToMsg("openagent.requests.x", e)
	if err != nil {
		t.Fatal(err)
	}
	err = v.CheckSize(m)
	ve, ok := err.(*ValidationError)
	if !ok || ve.Field != "size" {
		t.Fatalf("got %v; want a size error", err)
	}
	if _, err := NewValidator(WithMaxSize(0)); err == nil {
		t.Fatal("a max size of 0 was accepted")
	}
	if got := newValidator(t).MaxSize(); got != 1<<20 {
		t.Fatalf("default max size %d; want 1 MiB", got)
	}
}

// docs/EVENTS.md documents exactly the catalog.
func TestCatalogIsDocumented(t *testing.T) {
	b, err := os.ReadFile("../../docs/EVENTS.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for _, typ := range Types() {
		if !strings.Contains(doc, "`"+typ+"`") {
			t.Errorf("%s is not documented in docs/EVENTS.md", typ)
		}
	}
	for _, m := range regexp.MustCompile("`(io\\.openagent\\.[a-z.]+)`").FindAllStringSubmatch(doc, -1) {
		if KindOf(m[1]) == KindUnknown {
			t.Errorf("docs/EVENTS.md documents %s, which is not in the catalog", m[1])
		}
	}
}
