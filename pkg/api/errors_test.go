package api_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/schemas"
)

// The error kinds are one vocabulary: the table, the schemas' errorKind
// enum, and the driver's sentinels name the same kinds, so that every kind
// can be published, answered over HTTP and matched with errors.Is.
func TestErrorKindsAreOneVocabulary(t *testing.T) {
	b, err := schemas.FS.ReadFile("defs.json")
	if err != nil {
		t.Fatal(err)
	}
	var defs struct {
		Defs struct {
			ErrorKind struct {
				Enum []string `json:"enum"`
			} `json:"errorKind"`
		} `json:"$defs"`
	}
	if err := json.Unmarshal(b, &defs); err != nil {
		t.Fatal(err)
	}
	var table []string
	for _, k := range api.Kinds {
		table = append(table, string(k.Kind))
	}
	enum := slices.Clone(defs.Defs.ErrorKind.Enum)
	slices.Sort(enum)
	slices.Sort(table)
	if diff := cmp.Diff(enum, table); diff != "" {
		t.Fatalf("schema errorKind enum (-) and the kinds table (+) differ:\n%s", diff)
	}
	for _, k := range api.Kinds {
		if k.Status < 400 || k.Status > 599 || k.Text == "" {
			t.Errorf("%s: status %d, text %q; want an error status and a text", k.Kind, k.Status, k.Text)
		}
		if k.Sentinel == nil {
			// A driver never fails for want of a credential: that kind is the
			// doors' alone.
			if !(k.Kind == api.KindInternal && k.Status == http.StatusInternalServerError) && !(k.Kind == api.KindUnauthenticated && k.Status == http.StatusUnauthorized) {
				t.Errorf("%s has no sentinel; only internal and unauthenticated may", k.Kind)
			}
			continue
		}
		if got := driver.KindOf(k.Sentinel); got != string(k.Kind) {
			t.Errorf("driver.KindOf(%v) = %s; want %s", k.Sentinel, got, k.Kind)
		}
		if back := driver.FromKind(string(k.Kind), "op", "c", "m"); !errors.Is(back, k.Sentinel) {
			t.Errorf("an error of kind %s that crossed the bus does not match %v", k.Kind, k.Sentinel)
		}
	}
	if got := api.Info("nonsense").Kind; got != api.KindInternal {
		t.Errorf("an unknown kind reads as %s; want internal", got)
	}
}
