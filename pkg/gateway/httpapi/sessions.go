package httpapi

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
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
			// The body streams into the files store: any size up to the
			// cap, in bounded memory.
			body := &capped{r: http.MaxBytesReader(w, r.Body, s.Sessions.MaxFile()), limit: s.Sessions.MaxFile()}
			ref, err := s.Sessions.WriteFileFrom(r.Context(), r.PathValue("id"), r.URL.Query().Get("path"), body, principal(r))
			if err != nil {
				writeError(w, err)
				return
			}
			// A client that hashed what it sent checks it against this.
			if want := r.Header.Get("Repr-Digest"); want != "" && want != reprDigest(ref.SHA256) {
				writeError(w, &api.Error{Kind: api.KindInvalid, Field: "Repr-Digest", Message: fmt.Sprintf("the file arrived with %s, not the %s sent", reprDigest(ref.SHA256), want)})
				return
			}
			w.Header().Set("Repr-Digest", reprDigest(ref.SHA256))
			writeJSON(w, http.StatusOK, ref)
		}},
		{"GET", "/v1/sessions/{id}/files", func(w http.ResponseWriter, r *http.Request) {
			ref, body, err := s.Sessions.ReadFile(r.Context(), r.PathValue("id"), r.URL.Query().Get("path"), principal(r))
			if err != nil {
				writeError(w, err)
				return
			}
			defer body.Close()
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Header().Set("Content-Length", strconv.FormatUint(ref.Size, 10))
			w.Header().Set("Repr-Digest", reprDigest(ref.SHA256))
			_, _ = io.Copy(w, body) // a store that finds the object damaged cuts the body short of its length
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

// capped reads a body and says, in the API's terms, that it passed the cap.
type capped struct {
	r     io.Reader
	limit int64
}

func (c *capped) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		err = &api.Error{Kind: api.KindTooLarge, Field: "body", Message: fmt.Sprintf("the file is larger than the %d bytes a session takes at most", c.limit)}
	}
	return n, err
}

// reprDigest is the Repr-Digest header (RFC 9530) of a SHA-256 in hex.
func reprDigest(sha256Hex string) string {
	b, err := hex.DecodeString(sha256Hex)
	if err != nil {
		return ""
	}
	return "sha-256=:" + base64.StdEncoding.EncodeToString(b) + ":"
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
