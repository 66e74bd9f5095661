package driver

import (
	"errors"
	"fmt"
)

// Sentinel kinds, for errors.Is. Every error a driver returns matches one.
var (
	ErrNotFound      = errors.New("driver: not found")
	ErrAlreadyExists = errors.New("driver: already exists") // also matches ErrConflict
	ErrConflict      = errors.New("driver: conflict")
	ErrInvalid       = errors.New("driver: invalid")
	ErrResourceLimit = errors.New("driver: resource limit")
	ErrTimeout       = errors.New("driver: timeout")
	ErrPermission    = errors.New("driver: permission denied")
	ErrUnavailable   = errors.New("driver: unavailable")
	ErrNotSupported  = errors.New("driver: not supported")
	ErrTooLarge      = errors.New("driver: too large") // more data than the operation carries
)

// Error is an operation on a container that failed. Kind is one of the
// sentinels; errors.Is matches it.
type Error struct {
	Op          string // "create", "start", ...
	ContainerID string
	Kind        error
	Retryable   bool  // whether trying again later may succeed
	Err         error // the cause, if any
}

func (e *Error) Error() string {
	msg := fmt.Sprintf("%s %s: %s", e.Op, e.ContainerID, e.Kind)
	if e.ContainerID == "" {
		msg = fmt.Sprintf("%s: %s", e.Op, e.Kind)
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Is matches the error's kind; an ErrAlreadyExists is also an ErrConflict.
func (e *Error) Is(target error) bool {
	return target == e.Kind || (e.Kind == ErrAlreadyExists && target == ErrConflict)
}

func (e *Error) Unwrap() error { return e.Err }

// Errorf returns an *Error of the given kind whose cause is formatted.
// Unavailable and timeout errors are retryable.
func Errorf(op, containerID string, kind error, format string, args ...any) *Error {
	var cause error
	if format != "" {
		cause = fmt.Errorf(format, args...)
	}
	return &Error{Op: op, ContainerID: containerID, Kind: kind, Err: cause,
		Retryable: kind == ErrUnavailable || kind == ErrTimeout}
}

// NotFound is the error of any operation on an id the driver does not know.
func NotFound(op, id string) *Error {
	return Errorf(op, id, ErrNotFound, "no container with id %q", id)
}

// ResourceLimitError says that a request asked for more of a resource than
// is allowed or available. It matches ErrResourceLimit.
type ResourceLimitError struct {
	Resource  string // "cpu", "memory", "pids", "disk"
	Unit      string // "cores", "MB", ...
	Limit     float64
	Requested float64
}

func (e *ResourceLimitError) Error() string {
	return fmt.Sprintf("driver: resource limit: %s: requested %g %s, limit %g %s", e.Resource, e.Requested, e.Unit, e.Limit, e.Unit)
}

// Is reports whether target is ErrResourceLimit.
func (e *ResourceLimitError) Is(target error) bool { return target == ErrResourceLimit }

// Kind names, as error kinds travel in events (schemas/defs.json errorKind).
var kindNames = []struct {
	name string
	err  error
}{
	{"not_found", ErrNotFound},
	{"conflict", ErrConflict},
	{"invalid", ErrInvalid},
	{"resource_limit", ErrResourceLimit},
	{"timeout", ErrTimeout},
	{"permission", ErrPermission},
	{"unavailable", ErrUnavailable},
	{"not_supported", ErrNotSupported},
	{"too_large", ErrTooLarge},
}

// KindOf names the kind of err for an event: "not_found", "conflict", ...,
// or "internal" when it matches no sentinel.
func KindOf(err error) string {
	for _, k := range kindNames {
		if errors.Is(err, k.err) {
			return k.name
		}
	}
	return "internal"
}

// FromKind rebuilds an error that crossed the bus as an event, so that
// errors.Is matches the same sentinel as where it was raised.
func FromKind(kind, op, containerID, message string) error {
	for _, k := range kindNames {
		if k.name == kind {
			return &Error{Op: op, ContainerID: containerID, Kind: k.err, Err: errors.New(message),
				Retryable: k.err == ErrUnavailable || k.err == ErrTimeout}
		}
	}
	return &Error{Op: op, ContainerID: containerID, Kind: errors.New("driver: internal"), Err: errors.New(message)}
}
