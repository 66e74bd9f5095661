package events

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"testing"
)

// Every golden event's data decodes into its Go type with no field left
// over, and the type encodes it back into data its schema accepts: the
// payload types and the schemas say the same.
func TestPayloadsMatchSchemas(t *testing.T) {
	v := newValidator(t)
	files, _ := filepath.Glob("testdata/events/valid/*.json")
	seen := map[string]bool{}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			e, err := decodeFixture(t, f)
			if err != nil {
				t.Fatal(err)
			}
			seen[e.Type()] = true
			p := Payload(e.Type())
			if p == nil {
				t.Fatalf("no payload type for %s", e.Type())
			}
			dec := json.NewDecoder(bytes.NewReader(e.Data()))
			dec.DisallowUnknownFields()
			if err := dec.Decode(p); err != nil {
				t.Fatalf("decode into %T: %v", p, err)
			}
			again, err := New(e.Type(), e.Source(), p)
			if err != nil {
				t.Fatal(err)
			}
			if err := v.Validate(again); err != nil {
				t.Fatalf("%T encoded as %s: %v", p, again.Data(), err)
			}
		})
	}
	for _, typ := range Types() {
		if !seen[typ] {
			t.Errorf("no golden event of %s to check its payload type against", typ)
		}
	}
}
