package httpapi

import (
	"context"
	"net/http"
	"strings"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/creds"
	"github.com/openagent/orchestrator/pkg/events"
)

// Who may call what. A call carries a bearer token (Authorization: Bearer
// TOKEN) that names a principal and a role: admin may do anything; service
// may use every operation, on the sessions it created; auditor may read.
// Without a token store (Config.Tokens nil) the door is open and every
// caller is the admin "anonymous": for tests and a server that only its
// own machine reaches.

// access is what a route asks of its caller.
type access int

const (
	public    access = iota // anyone: health, version, the API's description
	read                    // any principal
	write                   // admin and service
	adminOnly               // what shapes the fleet: pools
)

type principalKey struct{}

// anonymous is the caller of an open door.
var anonymous = creds.Principal{Name: "anonymous", Role: events.RoleAdmin}

// principal is who made a call; the door authenticated it.
func principal(r *http.Request) creds.Principal {
	if p, ok := r.Context().Value(principalKey{}).(creds.Principal); ok {
		return p
	}
	return anonymous
}

// guard authenticates a call and checks its role against what the route
// asks.
func (s *server) guard(need access, h http.HandlerFunc) http.HandlerFunc {
	if need == public {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) {
		p := anonymous
		if s.Tokens != nil {
			token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || token == "" {
				w.Header().Set("WWW-Authenticate", `Bearer realm="openagent"`)
				writeError(w, &api.Error{Kind: api.KindUnauthenticated, Message: "no token: send Authorization: Bearer TOKEN (the embedded default writes DATA/credentials/admin.token; openagent token create makes others)"})
				return
			}
			if p, ok = s.Tokens.Lookup(strings.TrimSpace(token)); !ok {
				w.Header().Set("WWW-Authenticate", `Bearer realm="openagent", error="invalid_token"`)
				writeError(w, &api.Error{Kind: api.KindUnauthenticated, Message: "the token is not known: it was never issued, or was revoked"})
				return
			}
		}
		if need == adminOnly && !p.Admin() {
			writeError(w, &api.Error{Kind: api.KindPermission, Message: r.Method + " " + r.URL.Path + " is the admin's; role " + string(p.Role) + " may not"})
			return
		}
		if need == write && p.Role != events.RoleAdmin && p.Role != events.RoleService {
			writeError(w, &api.Error{Kind: api.KindPermission, Message: "role " + string(p.Role) + " may only read; " + r.Method + " " + r.URL.Path + " needs admin or service"})
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), principalKey{}, p)))
	}
}
