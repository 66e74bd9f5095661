package creds

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nkeys"

	"github.com/openagent/orchestrator/pkg/events"
)

// A credential with the role's permissions is kept as it is; one an older
// version issued, with other permissions (the shared _INBOX.>), is
// replaced with one that has them, and the old user is revoked.
func TestWriteCredsReplacesOutdatedPermissions(t *testing.T) {
	a, err := Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "service.creds")
	if err := a.WriteCreds(path, events.RoleService, ""); err != nil {
		t.Fatal(err)
	}
	first, _ := os.ReadFile(path)
	if err := a.WriteCreds(path, events.RoleService, ""); err != nil {
		t.Fatal(err)
	}
	if again, _ := os.ReadFile(path); !bytes.Equal(first, again) {
		t.Fatal("a current credential was replaced")
	}

	old, _ := nkeys.CreateUser()
	oldPub, _ := old.PublicKey()
	uc := jwt.NewUserClaims(oldPub)
	uc.Permissions.Pub.Allow.Add(events.RequestsRoot + ".>")
	uc.Permissions.Sub.Allow.Add("_INBOX.>")
	token, err := uc.Encode(a.account)
	if err != nil {
		t.Fatal(err)
	}
	seed, _ := old.Seed()
	b, _ := jwt.FormatUserConfig(token, seed)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := a.WriteCreds(path, events.RoleService, ""); err != nil {
		t.Fatal(err)
	}
	now, _ := os.ReadFile(path)
	user, err := User(now)
	if err != nil || user == oldPub {
		t.Fatalf("the outdated credential was kept (%v)", err)
	}
	if current, _, err := a.current(now, events.RoleService, ""); err != nil || !current {
		t.Fatalf("the new credential's permissions are not the role's: %v", err)
	}
	ucNow, _ := jwt.DecodeUserClaims(mustToken(t, now))
	if slices.Contains(ucNow.Permissions.Sub.Allow, "_INBOX.>") {
		t.Fatal("the new credential may still listen on every inbox")
	}
	if _, revoked := a.revoked[oldPub]; !revoked {
		t.Fatal("the outdated credential's user was not revoked")
	}
}

func mustToken(t *testing.T, creds []byte) string {
	t.Helper()
	tok, err := jwt.ParseDecoratedJWT(creds)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
