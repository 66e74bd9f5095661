package driver_test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/openagent/orchestrator/pkg/driver"
)

// fileID is what a path is on disk, whatever it is called.
type fileID struct{ dev, ino uint64 }

func idOf(p string) (fileID, bool) {
	var st syscall.Stat_t
	if syscall.Stat(p, &st) != nil {
		return fileID{}, false
	}
	return fileID{uint64(st.Dev), st.Ino}, true
}

// FuzzHostPathPolicy: no path the policy accepts, once resolved, is a
// denied directory or under one, judged by what is on disk (device and
// inode of every ancestor), not by the path's spelling. The paths are
// made of links to /etc, through /proc/self/root, relative links that
// climb out, "..", "." and empty components.
func FuzzHostPathPolicy(f *testing.F) {
	root := f.TempDir()
	must := func(err error) {
		if err != nil {
			f.Fatal(err)
		}
	}
	must(os.MkdirAll(filepath.Join(root, "work", "sub"), 0o755))
	links := map[string]string{"etc": "/etc", "proc": "/proc/self/root", "up": "..", "climb": "../../../../../../etc", "self": "."}
	for name, target := range links {
		must(os.Symlink(target, filepath.Join(root, name)))
		must(os.Symlink(target, filepath.Join(root, "work", name)))
	}
	parts := []string{"work", "sub", "etc", "proc", "up", "climb", "self", "..", ".", "", "shadow", "passwd", "var", "run"}
	denied := map[fileID]string{}
	for _, d := range driver.SensitivePaths {
		if id, ok := idOf(d); ok {
			denied[id] = d
		}
	}
	rootID, _ := idOf("/")
	for _, seed := range [][]byte{{2}, {3, 2, 10}, {0, 4, 4, 2}, {5}, {0, 1, 5, 11}, {6, 6, 2, 10}, {7, 7, 7, 7, 7, 7, 7, 2}, {3, 12, 13}} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, picks []byte) {
		if len(picks) > 12 {
			return
		}
		comps := []string{root}
		for _, b := range picks {
			comps = append(comps, parts[int(b)%len(parts)])
		}
		p := strings.Join(comps, "/")
		resolved, err := driver.ResolveHostPath(p)
		if err != nil || driver.DeniedHostPath(resolved, nil) != "" {
			return // refused
		}
		// Accepted: neither it nor any ancestor that exists may be a
		// denied directory, and it may not be the root.
		for a := resolved; ; a = filepath.Dir(a) {
			id, ok := idOf(a)
			if ok && a != "/" {
				if d, bad := denied[id]; bad {
					t.Fatalf("%s resolves to %s, which is under %s, and was accepted", p, resolved, d)
				}
			}
			if ok && a == resolved && id == rootID {
				t.Fatalf("%s resolves to the root and was accepted", p)
			}
			if a == "/" {
				break
			}
		}
	})
}
