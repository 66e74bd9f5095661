package events

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"

	"github.com/google/uuid"
)

// A request's identity is its CloudEvents identity, source and id: the
// same id from another source is another request. Every id a request
// causes is derived from that identity, so handling the same request
// again publishes the same ids, JetStream keeps one copy of each, and a
// create places the same container.

// idSpace derives the ids of the events a request causes.
var idSpace = uuid.MustParse("5b1f6c2e-6f0a-4c1e-9a55-0e6a4b1d7c3a")

// RequestKey is the identity of a request.
func RequestKey(req Event) string { return req.Source() + "\x00" + req.ID() }

// DeriveID returns the id of one step caused by the request or thing
// named by key.
func DeriveID(key, step string) string {
	return uuid.NewSHA1(idSpace, []byte(key+"\x00"+step)).String()
}

// RequestDigest sums what a request asks for, so that the same identity
// with different data is told apart from a retry.
func RequestDigest(req Event) string {
	h := sha256.New()
	h.Write([]byte(req.Type()))
	h.Write([]byte{0})
	h.Write(req.Data())
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// ContainerIDFor is the container a create request places when it names
// none: 24 hex digits derived from the request's identity.
func ContainerIDFor(key string) string {
	sum := sha256.Sum256([]byte("container\x00" + key))
	return hex.EncodeToString(sum[:12])
}

// NewContainerID returns a fresh container id: 24 hex digits.
func NewContainerID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
