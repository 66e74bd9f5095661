package events

import (
	"errors"
	"fmt"
	"time"
)

// Sentinels of this package, for errors.Is.
var (
	// ErrInvalid: an event breaks the CloudEvents spec, is not in the catalog,
	// its data does not match its schema, or it is too large. Such an event
	// can never succeed, so a consumer terminates it instead of redelivering.
	ErrInvalid = errors.New("events: invalid event")
	// ErrUnsafeConfig: a stream, bucket or consumer is configured in a way
	// that could lose events; start-up refuses it.
	ErrUnsafeConfig = errors.New("events: unsafe configuration")
	// ErrConsumerGone: Consume's consumer no longer exists on the server
	// (deleted, or a consumer kept in memory lost with a restart); create
	// it again and consume anew.
	ErrConsumerGone = errors.New("events: consumer gone")
)

// ErrorKind says what kind of failure an Error is. The schemas' errorKind
// enum holds the same names; pkg/api maps each to a driver sentinel, an
// HTTP status and a text.
type ErrorKind string

// Error kinds.
const (
	KindNotFound      ErrorKind = "not_found"
	KindConflict      ErrorKind = "conflict"
	KindInvalid       ErrorKind = "invalid"
	KindResourceLimit ErrorKind = "resource_limit"
	KindTimeout       ErrorKind = "timeout"
	KindPermission    ErrorKind = "permission"
	KindUnavailable   ErrorKind = "unavailable"
	KindNotSupported  ErrorKind = "not_supported"
	KindTooLarge      ErrorKind = "too_large"
	// KindUnauthenticated: a call without a valid credential; only the
	// doors answer it.
	KindUnauthenticated ErrorKind = "unauthenticated"
	KindInternal        ErrorKind = "internal"
)

// Error is a failure as it travels: in a rejected or failed event, and as
// the body of an HTTP error.
type Error struct {
	Kind      ErrorKind `json:"kind"`
	Message   string    `json:"message"`
	Field     string    `json:"field,omitempty"`
	ID        string    `json:"id,omitempty"`
	Retryable bool      `json:"retryable,omitempty"`
	// Policy names the admission policy that refused a request.
	Policy string `json:"policy,omitempty"`
}

func (e *Error) Error() string { return e.Message }

// ValidationError says which field of an event broke which rule. It matches
// ErrInvalid.
type ValidationError struct {
	Type    string // the event type, when known
	Field   string // "id", "source", "data.spec.resources.cpu", ...
	Rule    string // "required", "minimum", "uri-reference", ...
	Message string
}

func (e *ValidationError) Error() string {
	t := e.Type
	if t == "" {
		t = "event"
	}
	return fmt.Sprintf("events: invalid %s: %s: %s (rule %s)", t, e.Field, e.Message, e.Rule)
}

// Is reports whether target is ErrInvalid.
func (e *ValidationError) Is(target error) bool { return target == ErrInvalid }

// retryError asks a consumer for redelivery after a delay.
type retryError struct {
	err   error
	delay time.Duration
}

func (e *retryError) Error() string { return e.err.Error() }
func (e *retryError) Unwrap() error { return e.err }

// Retry marks err as transient: the message is negatively acknowledged and
// redelivered after delay (0 lets the consumer pick its backoff).
func Retry(err error, delay time.Duration) error {
	if err == nil {
		return nil
	}
	return &retryError{err: err, delay: delay}
}

// permanentError asks a consumer to terminate the message.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err as one that redelivery cannot fix: the message is
// terminated and never delivered again.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err was marked Permanent or is ErrInvalid.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p) || errors.Is(err, ErrInvalid)
}

// retryDelay returns the delay asked for by Retry, and whether one was.
func retryDelay(err error) (time.Duration, bool) {
	var r *retryError
	if errors.As(err, &r) && r.delay > 0 {
		return r.delay, true
	}
	return 0, false
}
