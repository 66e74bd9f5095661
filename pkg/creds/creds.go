// Package creds keeps the bus's keys and issues its credentials, in the
// decentralized JWT model of NATS: an operator signs one account (with
// JetStream) and a system account; the account signs a user for each
// credential, with the permissions of its role (events.PermissionsFor).
// A credential is a .creds file (the user's JWT and nkey seed) that
// nats.go and the nats CLI read. Revoking a user lists it in the account's
// revocations; the server refuses it from then on.
//
// The keys live in one directory, written with mode 0600 on first use.
// Whoever reads the directory can issue any credential: it belongs to the
// orchestrator's host only.
package creds

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/openagent/orchestrator/pkg/events"
)

// The names of the account and the system account, as the server shows
// them.
const (
	AccountName = "OPENAGENT"
	SystemName  = "SYS"
)

// Authority holds the keys and issues credentials. It is safe for
// concurrent use.
type Authority struct {
	dir                       string
	operator, account, system nkeys.KeyPair
	operatorJWT, systemJWT    string

	mu      sync.Mutex
	revoked map[string]int64 // user public key → revoked for JWTs issued before this unix time
}

// Open reads the keys in dir, making them on first use.
func Open(dir string) (*Authority, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creds: %w", err)
	}
	a := &Authority{dir: dir, revoked: map[string]int64{}}
	var err error
	if a.operator, err = key(filepath.Join(dir, "operator.nk"), nkeys.CreateOperator); err != nil {
		return nil, err
	}
	if a.account, err = key(filepath.Join(dir, "account.nk"), nkeys.CreateAccount); err != nil {
		return nil, err
	}
	if a.system, err = key(filepath.Join(dir, "system.nk"), nkeys.CreateAccount); err != nil {
		return nil, err
	}
	if b, err := os.ReadFile(a.revokedPath()); err == nil {
		if err := json.Unmarshal(b, &a.revoked); err != nil {
			return nil, fmt.Errorf("creds: %s: %w", a.revokedPath(), err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("creds: %w", err)
	}
	opPub, _ := a.operator.PublicKey()
	sysPub, _ := a.system.PublicKey()
	// The operator's and the system account's JWTs are kept as first
	// signed: a server reloading its configuration refuses a trusted
	// operator that changed, and one signed again (a new issue time) has.
	a.operatorJWT, err = keptJWT(filepath.Join(dir, "operator.jwt"), func(token string) bool {
		oc, err := jwt.DecodeOperatorClaims(token)
		return err == nil && oc.Subject == opPub && oc.SystemAccount == sysPub
	}, func() (string, error) {
		oc := jwt.NewOperatorClaims(opPub)
		oc.Name = "openagent"
		oc.SystemAccount = sysPub
		return oc.Encode(a.operator)
	})
	if err != nil {
		return nil, fmt.Errorf("creds: operator: %w", err)
	}
	a.systemJWT, err = keptJWT(filepath.Join(dir, "system.jwt"), func(token string) bool {
		sc, err := jwt.DecodeAccountClaims(token)
		return err == nil && sc.Subject == sysPub && sc.Issuer == opPub
	}, func() (string, error) {
		sc := jwt.NewAccountClaims(sysPub)
		sc.Name = SystemName
		return sc.Encode(a.operator)
	})
	if err != nil {
		return nil, fmt.Errorf("creds: system account: %w", err)
	}
	return a, nil
}

// keptJWT reads a JWT from path if it is there and still right (ok), or
// signs one with make and keeps it there.
func keptJWT(path string, ok func(string) bool, make func() (string, error)) (string, error) {
	if b, err := os.ReadFile(path); err == nil && ok(strings.TrimSpace(string(b))) {
		return strings.TrimSpace(string(b)), nil
	}
	token, err := make()
	if err != nil {
		return "", err
	}
	return token, writeFile(path, []byte(token+"\n"))
}

// key reads an nkey seed from path, or makes one and writes it there.
func key(path string, create func() (nkeys.KeyPair, error)) (nkeys.KeyPair, error) {
	if seed, err := os.ReadFile(path); err == nil {
		kp, err := nkeys.FromSeed([]byte(strings.TrimSpace(string(seed))))
		if err != nil {
			return nil, fmt.Errorf("creds: %s: %w", path, err)
		}
		return kp, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("creds: %w", err)
	}
	kp, err := create()
	if err != nil {
		return nil, fmt.Errorf("creds: %w", err)
	}
	seed, _ := kp.Seed()
	if err := writeFile(path, append(seed, '\n')); err != nil {
		return nil, err
	}
	return kp, nil
}

// writeFile writes a secret: mode 0600, whole or not at all.
func writeFile(path string, b []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fmt.Errorf("creds: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("creds: %w", err)
	}
	return nil
}

func (a *Authority) revokedPath() string { return filepath.Join(a.dir, "revoked.json") }

// Account is the public key of the account every credential belongs to.
func (a *Authority) Account() string {
	pub, _ := a.account.PublicKey()
	return pub
}

// AccountJWT is the account's JWT as of now: JetStream on, the
// revocations listed.
func (a *Authority) AccountJWT() (string, error) {
	ac, err := a.accountClaims()
	if err != nil {
		return "", err
	}
	return ac.Encode(a.operator)
}

func (a *Authority) accountClaims() (*jwt.AccountClaims, error) {
	ac := jwt.NewAccountClaims(a.Account())
	ac.Name = AccountName
	ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: jwt.NoLimit, DiskStorage: jwt.NoLimit, Streams: jwt.NoLimit, Consumer: jwt.NoLimit}
	a.mu.Lock()
	for pub, before := range a.revoked {
		ac.RevokeAt(pub, time.Unix(before, 0))
	}
	a.mu.Unlock()
	return ac, nil
}

// Issue makes a credential for a role; id names the host of a worker or
// the session of an agent, name says whom it is for. It returns the
// .creds file's content and the user's public key, which Revoke takes.
func (a *Authority) Issue(role events.Role, id, name string) ([]byte, string, error) {
	user, err := nkeys.CreateUser()
	if err != nil {
		return nil, "", fmt.Errorf("creds: %w", err)
	}
	pub, _ := user.PublicKey()
	perms, err := events.PermissionsFor(role, id, pub)
	if err != nil {
		return nil, "", err
	}
	uc := jwt.NewUserClaims(pub)
	uc.Name = string(role)
	if id != "" {
		uc.Name += "-" + id
	}
	if name != "" {
		uc.Name += " (" + name + ")"
	}
	uc.Tags.Add("role:" + string(role))
	uc.Permissions = jwt.Permissions{
		Pub: jwt.Permission{Allow: perms.PublishAllow, Deny: perms.PublishDeny},
		Sub: jwt.Permission{Allow: perms.SubscribeAllow, Deny: perms.SubscribeDeny},
	}
	token, err := uc.Encode(a.account)
	if err != nil {
		return nil, "", fmt.Errorf("creds: %w", err)
	}
	seed, _ := user.Seed()
	b, err := jwt.FormatUserConfig(token, seed)
	if err != nil {
		return nil, "", fmt.Errorf("creds: %w", err)
	}
	return b, pub, nil
}

// WriteCreds writes a credential for a role to path, mode 0600, unless a
// credential is there already with the permissions the role has now; one
// with other permissions (issued by an older version) is replaced and
// revoked, and a revoked one replaced.
func (a *Authority) WriteCreds(path string, role events.Role, id string) error {
	if old, err := os.ReadFile(path); err == nil {
		current, user, err := a.current(old, role, id)
		if err != nil || current {
			return err
		}
		defer a.Revoke(user)
	}
	b, _, err := a.Issue(role, id, filepath.Base(path))
	if err != nil {
		return err
	}
	return writeFile(path, b)
}

// current says whether a credential has the permissions its role has now.
func (a *Authority) current(credsFile []byte, role events.Role, id string) (bool, string, error) {
	token, err := jwt.ParseDecoratedJWT(credsFile)
	if err != nil {
		return false, "", fmt.Errorf("creds: not a credential: %w", err)
	}
	uc, err := jwt.DecodeUserClaims(token)
	if err != nil {
		return false, "", fmt.Errorf("creds: not a user's credential: %w", err)
	}
	a.mu.Lock()
	before, revoked := a.revoked[uc.Subject]
	a.mu.Unlock()
	if revoked && uc.IssuedAt <= before {
		return false, uc.Subject, nil // revoked: issue another
	}
	want, err := events.PermissionsFor(role, id, uc.Subject)
	if err != nil {
		return false, "", err
	}
	p := uc.Permissions
	same := slices.Equal(p.Pub.Allow, jwt.StringList(want.PublishAllow)) && slices.Equal(p.Pub.Deny, jwt.StringList(want.PublishDeny)) &&
		slices.Equal(p.Sub.Allow, jwt.StringList(want.SubscribeAllow)) && slices.Equal(p.Sub.Deny, jwt.StringList(want.SubscribeDeny))
	return same, uc.Subject, nil
}

// Dial connects to url, trying again for up to wait while no server
// answers (a deployment coming up all at once); a refusal, such as a
// credential the server does not take, ends it at once.
//
// The connection pings its server every KeepAlive and is made again after
// three pings go unanswered. A connection a partition cut looks alive to
// TCP, which resends what it holds with a backoff that doubles: without
// the pings, what was asked during the partition (a consumer's pull) was
// seen to arrive ten seconds after it healed; with them, the connection
// is made again at once.
func Dial(url string, wait time.Duration, opts ...nats.Option) (*nats.Conn, error) {
	deadline := time.Now().Add(wait)
	opts = append([]nats.Option{nats.PingInterval(KeepAlive), nats.MaxPingsOutstanding(3)}, opts...)
	for {
		nc, err := nats.Connect(url, opts...)
		if err == nil || !errors.Is(err, nats.ErrNoServers) || time.Now().After(deadline) {
			return nc, err
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// KeepAlive is how often a connection Dial made pings its server.
const KeepAlive = 2 * time.Second

// NATSOptions are the options that connect with a credential: the file,
// and the credential's own inbox prefix, without which its requests,
// consumers and watches get no answers.
func NATSOptions(credsFile string) ([]nats.Option, error) {
	b, err := os.ReadFile(credsFile)
	if err != nil {
		return nil, fmt.Errorf("creds: %w", err)
	}
	user, err := User(b)
	if err != nil {
		return nil, fmt.Errorf("creds: %s: %w", credsFile, err)
	}
	return []nats.Option{nats.UserCredentials(credsFile), nats.CustomInboxPrefix(events.InboxPrefix(user))}, nil
}

// Revoke refuses a user from now on: its credentials no longer connect,
// and a connection it has is closed. The revocation is kept with the
// keys; a running server learns it from Apply.
func (a *Authority) Revoke(userPub string) error {
	if !nkeys.IsValidPublicUserKey(userPub) {
		return fmt.Errorf("creds: %q is not a user's public key (U...)", userPub)
	}
	a.mu.Lock()
	a.revoked[userPub] = time.Now().Add(time.Second).Unix()
	b, _ := json.MarshalIndent(a.revoked, "", "  ")
	a.mu.Unlock()
	return writeFile(a.revokedPath(), b)
}

// Reload reads the revocations again, as another process may have
// written them.
func (a *Authority) Reload() error {
	b, err := os.ReadFile(a.revokedPath())
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("creds: %w", err)
	}
	revoked := map[string]int64{}
	if err := json.Unmarshal(b, &revoked); err != nil {
		return fmt.Errorf("creds: %s: %w", a.revokedPath(), err)
	}
	a.mu.Lock()
	a.revoked = revoked
	a.mu.Unlock()
	return nil
}

// Configure makes an embedded server trust the operator and know both
// accounts.
func (a *Authority) Configure(opts *server.Options) error {
	oc, err := jwt.DecodeOperatorClaims(a.operatorJWT)
	if err != nil {
		return fmt.Errorf("creds: %w", err)
	}
	acc, err := a.AccountJWT()
	if err != nil {
		return err
	}
	res := &server.MemAccResolver{}
	sysPub, _ := a.system.PublicKey()
	if err := res.Store(sysPub, a.systemJWT); err != nil {
		return fmt.Errorf("creds: %w", err)
	}
	if err := res.Store(a.Account(), acc); err != nil {
		return fmt.Errorf("creds: %w", err)
	}
	opts.TrustedOperators = []*jwt.OperatorClaims{oc}
	opts.AccountResolver = res
	opts.SystemAccount = sysPub
	return nil
}

// Apply gives a running embedded server the account as it is now, with
// its revocations: revoked users' connections are closed.
func (a *Authority) Apply(s *server.Server) error {
	acc, err := s.LookupAccount(a.Account())
	if err != nil {
		return fmt.Errorf("creds: %w", err)
	}
	ac, err := a.accountClaims()
	if err != nil {
		return err
	}
	token, err := ac.Encode(a.operator)
	if err != nil {
		return fmt.Errorf("creds: %w", err)
	}
	// The server takes claims as decoded from their JWT, stamped.
	decoded, err := jwt.DecodeAccountClaims(token)
	if err != nil {
		return fmt.Errorf("creds: %w", err)
	}
	s.UpdateAccountClaims(acc, decoded)
	return nil
}

// ServerConfig writes the part of a nats-server configuration that makes
// an external server or cluster trust these credentials: the operator,
// the system account and a memory resolver preloaded with both accounts.
func (a *Authority) ServerConfig(w io.Writer) error {
	acc, err := a.AccountJWT()
	if err != nil {
		return err
	}
	sysPub, _ := a.system.PublicKey()
	_, err = fmt.Fprintf(w, `# OpenAgent: trust the operator whose keys the orchestrator keeps.
# Include this file in each server's configuration. After a revocation,
# write it again and reload the servers (nats-server --signal reload).
operator: %s
system_account: %s
resolver: MEMORY
resolver_preload: {
  %s: %s
  %s: %s
}
`, a.operatorJWT, sysPub, sysPub, a.systemJWT, a.Account(), acc)
	return err
}

// User returns the public key of the user a .creds file is for, which
// Revoke takes.
func User(credsFile []byte) (string, error) {
	token, err := jwt.ParseDecoratedJWT(credsFile)
	if err != nil {
		return "", fmt.Errorf("creds: not a credential: %w", err)
	}
	uc, err := jwt.DecodeUserClaims(token)
	if err != nil {
		return "", fmt.Errorf("creds: not a user's credential: %w", err)
	}
	return uc.Subject, nil
}

// Watch applies to a running embedded server the revocations written to
// the keys' directory, by this process or another (the CLI), looking
// every interval, until ctx ends.
func (a *Authority) Watch(ctx context.Context, s *server.Server, every time.Duration) error {
	var last time.Time
	if fi, err := os.Stat(a.revokedPath()); err == nil {
		last = fi.ModTime()
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		fi, err := os.Stat(a.revokedPath())
		if err != nil || !fi.ModTime().After(last) {
			continue
		}
		last = fi.ModTime()
		if err := a.Reload(); err != nil {
			return err
		}
		if err := a.Apply(s); err != nil {
			return err
		}
	}
}
