package api

import (
	"errors"
	"net/http"

	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/events"
)

// ErrorKind says what kind of failure an Error is: the one vocabulary of
// events, HTTP answers, the CLI and the SDK, defined with the bus contract.
type ErrorKind = events.ErrorKind

// Error kinds.
const (
	KindNotFound        = events.KindNotFound
	KindConflict        = events.KindConflict
	KindInvalid         = events.KindInvalid
	KindResourceLimit   = events.KindResourceLimit
	KindTimeout         = events.KindTimeout
	KindPermission      = events.KindPermission
	KindUnavailable     = events.KindUnavailable
	KindNotSupported    = events.KindNotSupported
	KindTooLarge        = events.KindTooLarge
	KindUnauthenticated = events.KindUnauthenticated
	KindInternal        = events.KindInternal
)

// Error is the body of every error response, and why a request was
// rejected or an operation failed: the same as in events.
type Error = events.Error

// KindInfo is what a kind means to each side: the driver sentinel an error
// of the kind matches, the HTTP status it is answered with, and how the
// CLI names it.
type KindInfo struct {
	Kind     ErrorKind
	Sentinel error // nil for internal
	Status   int
	Text     string
}

// Kinds is the table of every error kind.
var Kinds = []KindInfo{
	{KindNotFound, driver.ErrNotFound, http.StatusNotFound, "not found"},
	{KindConflict, driver.ErrConflict, http.StatusConflict, "conflict"},
	{KindInvalid, driver.ErrInvalid, http.StatusBadRequest, "invalid"},
	{KindResourceLimit, driver.ErrResourceLimit, http.StatusUnprocessableEntity, "resource limit"},
	{KindTimeout, driver.ErrTimeout, http.StatusGatewayTimeout, "timeout"},
	{KindPermission, driver.ErrPermission, http.StatusForbidden, "permission"},
	{KindUnavailable, driver.ErrUnavailable, http.StatusServiceUnavailable, "unavailable"},
	{KindNotSupported, driver.ErrNotSupported, http.StatusNotImplemented, "not supported"},
	{KindTooLarge, driver.ErrTooLarge, http.StatusRequestEntityTooLarge, "too large"},
	{KindUnauthenticated, nil, http.StatusUnauthorized, "unauthenticated"},
	{KindInternal, nil, http.StatusInternalServerError, "internal"},
}

// Info returns the table's row of a kind; an unknown kind reads as
// internal.
func Info(k ErrorKind) KindInfo {
	for _, i := range Kinds {
		if i.Kind == k {
			return i
		}
	}
	return Kinds[len(Kinds)-1]
}

// AsError returns the *Error err is or wraps; any other error reads as
// internal, with its message. Doors answer with it.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Kind: KindInternal, Message: err.Error()}
}
