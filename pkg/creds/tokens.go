package creds

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/events"
)

// HTTP bearer tokens. A token names a principal and a role; the store
// keeps only each token's SHA-256, in tokens.json beside the bus's keys,
// so that reading the file gives no token away. The HTTP door reads the
// file again when it changes: a token made by the CLI works at once.

// Principal is who makes a call, as a token says.
type Principal = api.Principal

// TokenRoles are the roles a token may have: the HTTP door's callers.
var TokenRoles = []events.Role{events.RoleAdmin, events.RoleService, events.RoleAuditor}

var tokenName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$`)

type tokenRecord struct {
	Principal
	Created time.Time `json:"created"`
}

// Tokens is the token store of one directory. It is safe for concurrent
// use.
type Tokens struct {
	path string

	mu      sync.Mutex
	byHash  map[string]tokenRecord
	modTime time.Time
	checked time.Time
}

// OpenTokens returns the token store in dir.
func OpenTokens(dir string) (*Tokens, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creds: %w", err)
	}
	t := &Tokens{path: filepath.Join(dir, "tokens.json"), byHash: map[string]tokenRecord{}}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t, t.readLocked()
}

func hashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

func (t *Tokens) readLocked() error {
	fi, err := os.Stat(t.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("creds: %w", err)
	}
	if fi.ModTime().Equal(t.modTime) {
		return nil
	}
	b, err := os.ReadFile(t.path)
	if err != nil {
		return fmt.Errorf("creds: %w", err)
	}
	m := map[string]tokenRecord{}
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("creds: %s: %w", t.path, err)
	}
	t.byHash, t.modTime = m, fi.ModTime()
	return nil
}

// Create makes a token for a principal, records it, and returns it: the
// only time it is seen whole.
func (t *Tokens) Create(p Principal) (string, error) {
	if !tokenName.MatchString(p.Name) {
		return "", fmt.Errorf("creds: a token's name is letters, digits and ._@-, up to 128; got %q", p.Name)
	}
	known := false
	for _, r := range TokenRoles {
		known = known || r == p.Role
	}
	if !known {
		return "", fmt.Errorf("creds: a token's role is admin, service or auditor; got %q", p.Role)
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("creds: %w", err)
	}
	token := "oat_" + hex.EncodeToString(raw[:])
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.readLocked(); err != nil {
		return "", err
	}
	m := maps.Clone(t.byHash)
	if m == nil {
		m = map[string]tokenRecord{}
	}
	m[hashToken(token)] = tokenRecord{Principal: p, Created: time.Now().UTC()}
	b, _ := json.MarshalIndent(m, "", "  ")
	if err := writeFile(t.path, b); err != nil {
		return "", err
	}
	t.byHash, t.modTime = m, time.Time{} // read again: the file's time is the truth
	return token, nil
}

// Lookup returns the principal of a token. The file is read again when it
// changed, at most once a second.
func (t *Tokens) Lookup(token string) (Principal, bool) {
	if token == "" {
		return Principal{}, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if now := time.Now(); now.Sub(t.checked) > time.Second || t.modTime.IsZero() {
		t.checked = now
		_ = t.readLocked() // a file being rewritten is read at the next call
	}
	// Looked up by its hash: timing tells nothing of the token itself.
	r, ok := t.byHash[hashToken(token)]
	return r.Principal, ok
}

// Revoke forgets every token of a principal's name; it reports how many.
func (t *Tokens) Revoke(name string) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if err := t.readLocked(); err != nil {
		return 0, err
	}
	m := map[string]tokenRecord{}
	n := 0
	for k, v := range t.byHash {
		if v.Name == name {
			n++
			continue
		}
		m[k] = v
	}
	if n == 0 {
		return 0, nil
	}
	b, _ := json.MarshalIndent(m, "", "  ")
	if err := writeFile(t.path, b); err != nil {
		return 0, err
	}
	t.byHash, t.modTime = m, time.Time{}
	return n, nil
}

// EnsureAdminToken writes an admin token to path, mode 0600, unless one
// is there that the store knows.
func (t *Tokens) EnsureAdminToken(path string) error {
	if b, err := os.ReadFile(path); err == nil {
		if p, ok := t.Lookup(strings.TrimSpace(string(b))); ok && p.Admin() {
			return nil
		}
	}
	token, err := t.Create(Principal{Name: "admin", Role: events.RoleAdmin})
	if err != nil {
		return err
	}
	return writeFile(path, []byte(token+"\n"))
}
