// Package audit makes the events stream verifiable: a hash chain over it
// and checkpoints of the chain signed with the orchestrator's ed25519 key.
//
// Each event's link is SHA-256 of the previous link, the event's sequence
// in the stream (8 bytes, big-endian) and its canonical form (its
// structured CloudEvents JSON without what only a served copy carries).
// The leader publishes, every CheckpointEvery while the stream grows, an
// io.openagent.audit.checkpoint naming the last sequence it folded and
// the link there, signed. A verifier folds the same chain over the live
// stream or an export and holds each checkpoint against it: an event
// changed, dropped, inserted or moved breaks the chain or its order, and
// the first such place is reported. Without the key no one can sign a
// checkpoint over a history rewritten.
package audit

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/openagent/orchestrator/pkg/events"
)

// CheckpointEvery is how often the leader signs the chain while the
// events stream grows.
const CheckpointEvery = 10 * time.Second

// Link is one link of the chain.
type Link [sha256.Size]byte

// Genesis is the link before the first event.
var Genesis = Link(sha256.Sum256([]byte("openagent audit chain v1")))

func (l Link) String() string { return hex.EncodeToString(l[:]) }

// ParseLink reads a link written by String.
func ParseLink(s string) (Link, error) {
	var l Link
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(l) {
		return l, fmt.Errorf("audit: %q is not a link (64 hex digits)", s)
	}
	copy(l[:], b)
	return l, nil
}

// Canonical is the form of an event the chain covers: its structured
// JSON, without the sequence a served copy carries.
func Canonical(e events.Event) ([]byte, error) {
	e = e.Clone()
	if _, ok := e.Extensions()[events.ExtStreamSeq]; ok {
		e.SetExtension(events.ExtStreamSeq, nil) // nil removes it
	}
	return json.Marshal(e)
}

// Next is the link after prev for the event at seq.
func Next(prev Link, seq uint64, canonical []byte) Link {
	h := sha256.New()
	h.Write(prev[:])
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], seq)
	h.Write(n[:])
	h.Write(canonical)
	var out Link
	copy(out[:], h.Sum(nil))
	return out
}

// signed is what a checkpoint's signature covers.
func signed(seq uint64, link string) []byte {
	return []byte("openagent audit checkpoint v1\n" + strconv.FormatUint(seq, 10) + "\n" + link)
}

// Sign makes the checkpoint of the chain at seq.
func Sign(key ed25519.PrivateKey, seq uint64, link Link) events.AuditCheckpointData {
	pub := key.Public().(ed25519.PublicKey)
	return events.AuditCheckpointData{Seq: seq, Link: link.String(), Key: KeyID(pub),
		Signature: base64.StdEncoding.EncodeToString(ed25519.Sign(key, signed(seq, link.String())))}
}

// Check verifies a checkpoint's signature with the key it names, which
// must be trusted when trusted is not nil.
func Check(d events.AuditCheckpointData, trusted ed25519.PublicKey) error {
	pub, err := ParseKey(d.Key)
	if err != nil {
		return err
	}
	if trusted != nil && !pub.Equal(trusted) {
		return fmt.Errorf("signed by %s, not by the trusted key %s", d.Key, KeyID(trusted))
	}
	sig, err := base64.StdEncoding.DecodeString(d.Signature)
	if err != nil || !ed25519.Verify(pub, signed(d.Seq, d.Link), sig) {
		return errors.New("its signature does not verify")
	}
	return nil
}

// KeyID writes a public key as checkpoints name it: "ed25519:" and hex.
func KeyID(pub ed25519.PublicKey) string { return "ed25519:" + hex.EncodeToString(pub) }

// ParseKey reads a key written by KeyID (the prefix is optional).
func ParseKey(s string) (ed25519.PublicKey, error) {
	b, err := hex.DecodeString(strings.TrimPrefix(strings.TrimSpace(s), "ed25519:"))
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("audit: %q is not an ed25519 public key (ed25519: and 64 hex digits)", s)
	}
	return ed25519.PublicKey(b), nil
}

// OpenKey reads the signing key at path (a seed, in hex), making it on
// first use, and writes its public half beside it (path.pub) for
// verifiers to trust. Orchestrators starting together with one
// credentials directory end with one key: the first to make it wins.
func OpenKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		if err := makeKey(path); err != nil {
			return nil, err
		}
		b, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	seed, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("audit: %s is not an ed25519 seed", path)
	}
	key := ed25519.NewKeyFromSeed(seed)
	if err := write(path+".pub", KeyID(key.Public().(ed25519.PublicKey))+"\n", 0o644); err != nil {
		return nil, err
	}
	return key, nil
}

// makeKey writes a new key to path unless one is there already: linked
// into place whole, never replacing another's.
func makeKey(path string) error {
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".audit-key-*")
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(hex.EncodeToString(key.Seed()) + "\n"); err != nil {
		tmp.Close()
		return fmt.Errorf("audit: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if err := os.Link(tmp.Name(), path); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("audit: %w", err)
	}
	return nil
}

func write(path, s string, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".audit-*")
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(s)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), mode)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	return nil
}
