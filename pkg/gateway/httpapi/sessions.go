package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/events"
)

func (s *server) sessionRoutes() []route {
	return []route{
		{"POST", "/v1/sessions", func(w http.ResponseWriter, r *http.Request) {
			var req api.SessionRequest
			if !decodeBody(w, r, &req) {
				return
			}
			sess, err := s.Sessions.Create(r.Context(), req, principal(r))
			if err != nil {
				writeError(w, err)
				return
			}
			writeJSON(w, http.StatusCreated, sess)
		}},
		{"GET", "/v1/sessions", func(w http.ResponseWriter, r *http.Request) {
			writeJSON(w, http.StatusOK, s.Sessions.List(r.URL.Query().Get("all") == "true", principal(r)))
		}},
		{"GET", "/v1/sessions/{id}", func(w http.ResponseWriter, r *http.Request) {
			sess, err := s.Sessions.Session(r.PathValue("id"), principal(r))
			if err != nil {
				writeError(w, err)
				return
			}
			writeJSON(w, http.StatusOK, sess)
		}},
		{"DELETE", "/v1/sessions/{id}", func(w http.ResponseWriter, r *http.Request) {
			sess, err := s.Sessions.Close(r.Context(), r.PathValue("id"), principal(r))
			if err != nil {
				writeError(w, err)
				return
			}
			writeJSON(w, http.StatusOK, sess)
		}},
		{"POST", "/v1/sessions/{id}/extend", func(w http.ResponseWriter, r *http.Request) {
			var req api.ExtendRequest
			if !decodeBody(w, r, &req) {
				return
			}
			sess, err := s.Sessions.Extend(r.Context(), r.PathValue("id"), time.Duration(req.TimeoutMs)*time.Millisecond, principal(r))
			if err != nil {
				writeError(w, err)
				return
			}
			writeJSON(w, http.StatusOK, sess)
		}},
		{"PUT", "/v1/sessions/{id}/files", func(w http.ResponseWriter, r *http.Request) {
			b, err := readBody(w, r)
			if err == nil {
				err = s.Sessions.WriteFile(r.Context(), r.PathValue("id"), r.URL.Query().Get("path"), b, principal(r))
			}
			if err != nil {
				writeError(w, err)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		}},
		{"GET", "/v1/sessions/{id}/files", func(w http.ResponseWriter, r *http.Request) {
			b, err := s.Sessions.ReadFile(r.Context(), r.PathValue("id"), r.URL.Query().Get("path"), principal(r))
			if err != nil {
				writeError(w, err)
				return
			}
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Write(b)
		}},
		{"PUT", "/v1/pools", func(w http.ResponseWriter, r *http.Request) {
			var p api.Pool
			if !decodeBody(w, r, &p) {
				return
			}
			out, err := s.Sessions.SetPool(r.Context(), p)
			if err != nil {
				writeError(w, err)
				return
			}
			writeJSON(w, http.StatusOK, out)
		}},
		{"GET", "/v1/pools", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, s.Sessions.Pools()) }},
		{"DELETE", "/v1/pools", func(w http.ResponseWriter, r *http.Request) {
			var p api.Pool
			if !decodeBody(w, r, &p) {
				return
			}
			if err := s.Sessions.RemovePool(r.Context(), p); err != nil {
				writeError(w, err)
				return
			}
			w.WriteHeader(http.StatusNoContent)
		}},
		{"POST", "/v1/sessions/{id}/exec", func(w http.ResponseWriter, r *http.Request) {
			var req api.RunCodeRequest
			if !decodeBody(w, r, &req) {
				return
			}
			if r.URL.Query().Get("stream") != "true" && r.Header.Get("Accept") != "text/event-stream" {
				res, err := s.Sessions.RunCode(r.Context(), r.PathValue("id"), req, principal(r), nil)
				if err != nil {
					writeError(w, err)
					return
				}
				writeJSON(w, http.StatusOK, res)
				return
			}
			// Server-sent events: stdout and stderr chunks as they come, then
			// the result (or error) as the last event.
			w.Header().Set("Content-Type", "text/event-stream")
			w.Header().Set("Cache-Control", "no-cache")
			w.WriteHeader(http.StatusOK)
			flush(w)
			sse := func(event string, v any) {
				b, _ := json.Marshal(v)
				fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, b)
				flush(w)
			}
			res, err := s.Sessions.RunCode(r.Context(), r.PathValue("id"), req, principal(r), func(c events.Chunk) { sse(c.Stream, c.Data) })
			if err != nil {
				sse("error", api.AsError(err))
				return
			}
			sse("result", res)
		}},
	}
}

// decodeBody reads a JSON body into v, refusing unknown fields.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	b, err := readBody(w, r)
	if err != nil {
		writeError(w, err)
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, jsonError(err))
		return false
	}
	return true
}
