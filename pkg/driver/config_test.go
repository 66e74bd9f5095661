package driver

import (
	"encoding/json"
	"errors"
	"path"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func valid() ContainerConfig {
	c := DefaultConfig()
	c.SessionID, c.Image = "s-1", "host"
	return c
}

func TestDefaultsAreSecure(t *testing.T) {
	c := DefaultConfig()
	want := Resources{CPU: 0.5, MemoryMB: 512, DiskMB: 1024, Pids: 100}
	if c.Resources != want {
		t.Fatalf("resources %+v; want %+v", c.Resources, want)
	}
	s := c.Security
	if !s.ReadOnlyRoot || !s.NoNewPrivileges || s.User == "" || strings.HasPrefix(s.User, "0") || len(s.CapDrop) != 1 || s.CapDrop[0] != "ALL" {
		t.Fatalf("security %+v; want read-only root, no new privileges, a non-root user, drop ALL", s)
	}
}

func TestJSONDecodesOntoDefaults(t *testing.T) {
	var c ContainerConfig
	if err := json.Unmarshal([]byte(`{"sessionId":"s","image":"host","resources":{"cpu":2}}`), &c); err != nil {
		t.Fatal(err)
	}
	want := valid()
	want.SessionID, want.Resources.CPU = "s", 2
	if d := cmp.Diff(want, c); d != "" {
		t.Fatalf("decoded config (-want +got):\n%s", d)
	}
	// An explicit zero is kept, and refused: never silently the default.
	if err := json.Unmarshal([]byte(`{"sessionId":"s","image":"host","resources":{"memoryMB":0}}`), &c); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "resources.memoryMB") {
		t.Fatalf("explicit memoryMB 0: %v; want refused naming resources.memoryMB", err)
	}
}

func TestValidateNamesTheField(t *testing.T) {
	for field, mutate := range map[string]func(*ContainerConfig){
		"sessionId":                func(c *ContainerConfig) { c.SessionID = " " },
		"image":                    func(c *ContainerConfig) { c.Image = "" },
		"resources.cpu":            func(c *ContainerConfig) { c.Resources.CPU = -1 },
		"resources.memoryMB":       func(c *ContainerConfig) { c.Resources.MemoryMB = 0 },
		"resources.diskMB":         func(c *ContainerConfig) { c.Resources.DiskMB = 0 },
		"resources.pids":           func(c *ContainerConfig) { c.Resources.Pids = 0 },
		"env.A-B":                  func(c *ContainerConfig) { c.Env = map[string]string{"A-B": "1"} },
		"labels.-bad":              func(c *ContainerConfig) { c.Labels = map[string]string{"-bad": "1"} },
		"volumes[0].target":        func(c *ContainerConfig) { c.Volumes = []VolumeMount{{Source: "/srv", Target: "srv"}} },
		"volumes[0].source":        func(c *ContainerConfig) { c.Volumes = []VolumeMount{{Source: "srv", Target: "/srv"}} },
		"volumes[0].type":          func(c *ContainerConfig) { c.Volumes = []VolumeMount{{Type: "tmpfs", Source: "/x", Target: "/srv"}} },
		"workingDir":               func(c *ContainerConfig) { c.WorkingDir = "work" },
		"ports[0].containerPort":   func(c *ContainerConfig) { c.Ports = []PortMapping{{ContainerPort: 0}} },
		"security.capabilities[0]": func(c *ContainerConfig) { c.Security.CapAdd = []string{"net_admin"} },
		"restartPolicy":            func(c *ContainerConfig) { c.RestartPolicy = "sometimes" },
		"healthCheck.command":      func(c *ContainerConfig) { c.HealthCheck = &HealthCheck{} },
	} {
		t.Run(field, func(t *testing.T) {
			c := valid()
			mutate(&c)
			err := c.Validate()
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Field != field || !errors.Is(err, ErrInvalid) {
				t.Fatalf("got %v; want a ConfigError on %s", err, field)
			}
		})
	}
	c := valid()
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults refused: %v", err)
	}
}

func TestErrorKinds(t *testing.T) {
	err := error(Errorf("create", "c-1", ErrAlreadyExists, "exists"))
	if !errors.Is(err, ErrAlreadyExists) || !errors.Is(err, ErrConflict) || errors.Is(err, ErrNotFound) {
		t.Fatalf("%v: want ErrAlreadyExists and ErrConflict only", err)
	}
	var de *Error
	if !errors.As(err, &de) || de.ContainerID != "c-1" || de.Op != "create" || de.Retryable {
		t.Fatalf("errors.As: %+v", de)
	}
	if !Errorf("start", "c", ErrUnavailable, "").Retryable {
		t.Fatal("an unavailable runtime must be retryable")
	}
	rl := error(&ResourceLimitError{Resource: "memory", Unit: "MB", Limit: 256, Requested: 512})
	var rle *ResourceLimitError
	if !errors.Is(rl, ErrResourceLimit) || !errors.As(rl, &rle) || rle.Requested != 512 {
		t.Fatalf("%v: want a ResourceLimitError matching ErrResourceLimit", rl)
	}
	// Kinds survive a trip through an event.
	for _, kind := range []error{ErrNotFound, ErrConflict, ErrInvalid, ErrResourceLimit, ErrTimeout, ErrPermission, ErrUnavailable, ErrNotSupported} {
		back := FromKind(KindOf(Errorf("op", "c", kind, "x")), "op", "c", "x")
		if !errors.Is(back, kind) {
			t.Errorf("%v lost its kind across the bus: %v", kind, back)
		}
	}
	if KindOf(errors.New("boom")) != "internal" {
		t.Error("an unclassified error must be internal")
	}
}

func TestStatusText(t *testing.T) {
	for s := StatusUnknown; s <= StatusExited; s++ {
		b, _ := s.MarshalText()
		var back Status
		_ = back.UnmarshalText(b)
		if back != s {
			t.Errorf("%v round-tripped to %v", s, back)
		}
	}
}

// Mount paths come from outside: whatever Validate accepts must be an
// absolute target other than the root, and a bind source an absolute path.
func FuzzValidateVolume(f *testing.F) {
	f.Add("bind", "/srv/data", "/data", false)
	f.Add("volume", "cache", "/../..", true)
	f.Add("", "relative", "/x", false)
	f.Fuzz(func(t *testing.T, typ, src, target string, ro bool) {
		c := valid()
		c.Volumes = []VolumeMount{{Type: MountType(typ), Source: src, Target: target, ReadOnly: ro}}
		if err := c.Validate(); err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not match ErrInvalid", err)
			}
			return
		}
		if !path.IsAbs(target) || path.Clean(target) == "/" {
			t.Fatalf("accepted target %q", target)
		}
		if (typ == "" || typ == "bind") && !path.IsAbs(src) {
			t.Fatalf("accepted bind source %q", src)
		}
	})
}
