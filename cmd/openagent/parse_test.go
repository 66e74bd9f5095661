package main

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/driver"
)

// The flags' small languages: volumes as docker writes them (ro and rw),
// egress rules, and constraints with operators; what is malformed is
// refused.
func TestFlagForms(t *testing.T) {
	for in, want := range map[string]driver.VolumeMount{
		"/data:/mnt:rw": {Type: driver.MountBind, Source: "/data", Target: "/mnt"},
		"/data:/mnt:ro": {Type: driver.MountBind, Source: "/data", Target: "/mnt", ReadOnly: true},
		"cache:/cache":  {Type: driver.MountVolume, Source: "cache", Target: "/cache"},
	} {
		got, err := parseVolume(in)
		if err != nil || got != want {
			t.Errorf("--volume %s: %+v, %v; want %+v", in, got, err, want)
		}
	}
	if _, err := parseVolume("/data:/mnt:rx"); err == nil {
		t.Error("--volume with mode rx was taken")
	}
	rules, err := parseEgress([]string{"pypi.org:443", "10.0.0.0/8", "dns.example:53,853"})
	if d := cmp.Diff([]driver.EgressRule{{To: "pypi.org", Ports: []int{443}}, {To: "10.0.0.0/8"}, {To: "dns.example", Ports: []int{53, 853}}}, rules); err != nil || d != "" {
		t.Errorf("--egress: %v\n%s", err, d)
	}
	if _, err := parseEgress([]string{"host:99999"}); err == nil {
		t.Error("--egress with port 99999 was taken")
	}
	eq, exprs, err := parseConstraints([]string{"zone=a", "gpu exists", "tier in gold,silver", "os!=windows", "rack notin r1, r2"})
	want := []api.Expression{{Key: "gpu", Op: "exists"}, {Key: "tier", Op: "in", Values: []string{"gold", "silver"}},
		{Key: "os", Op: "!=", Values: []string{"windows"}}, {Key: "rack", Op: "notin", Values: []string{"r1", "r2"}}}
	if d := cmp.Diff(want, exprs); err != nil || eq["zone"] != "a" || len(eq) != 1 || d != "" {
		t.Errorf("--constraint: %v %v\n%s", eq, err, d)
	}
	if _, _, err := parseConstraints([]string{"zone"}); err == nil {
		t.Error("--constraint zone was taken")
	}
}
