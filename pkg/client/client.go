// Package client is the Go SDK of the OpenAgent HTTP API, for services and
// for the CLI. Errors match the driver's sentinels with errors.Is, whether
// they arose on a host or in the orchestrator:
//
//	_, err := c.Get(ctx, "nope")
//	errors.Is(err, driver.ErrNotFound) // true
package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"iter"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/driver"
	"github.com/openagent/orchestrator/pkg/events"
)

// DefaultServer is where the orchestrator serves by default.
const DefaultServer = "http://127.0.0.1:8080"

// Client talks to one orchestrator. It is safe for concurrent use.
type Client struct {
	base  string
	hc    *http.Client
	token string
}

// Option configures a Client.
type Option func(*Client)

// WithHTTPClient sets the HTTP client used.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// WithToken authenticates the requests with a bearer token; the token
// names who makes them (for session ownership, timers and the audit) and
// the role that says what they may do.
func WithToken(token string) Option { return func(c *Client) { c.token = token } }

// New returns a client of the orchestrator at server (DefaultServer if "").
func New(server string, opts ...Option) *Client {
	if server == "" {
		server = DefaultServer
	}
	c := &Client{base: strings.TrimRight(server, "/"), hc: &http.Client{}}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Error is an error the API answered with. It matches the driver sentinel
// of its kind with errors.Is.
type Error struct {
	StatusCode int // 0 when the orchestrator could not be reached
	Kind       api.ErrorKind
	Message    string
	Field      string
	ID         string
}

func (e *Error) Error() string {
	msg := string(e.Kind) + ": " + e.Message
	if e.Field != "" && !strings.Contains(e.Message, e.Field) {
		msg += " (field " + e.Field + ")"
	}
	return msg
}

// Is matches the driver sentinel of the error's kind.
func (e *Error) Is(target error) bool {
	if s := api.Info(e.Kind).Sentinel; s != nil {
		return s == target || (s == driver.ErrAlreadyExists && target == driver.ErrConflict)
	}
	return false
}

func (c *Client) do(ctx context.Context, method, path string, body, out any) error {
	resp, err := c.send(ctx, method, path, body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil || resp.StatusCode == http.StatusNoContent {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("client: decode %s %s: %w", method, path, err)
	}
	return nil
}

// raw sends bytes and reads bytes, for files.
func (c *Client) raw(ctx context.Context, method, path string, body []byte, out *[]byte) error {
	resp, err := c.sendBytes(ctx, method, path, body, "application/octet-stream")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out != nil {
		*out, err = io.ReadAll(resp.Body)
	}
	return err
}

// send makes a request and turns an error status into an *Error.
func (c *Client) send(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var b []byte
	if body != nil {
		var err error
		if b, err = json.Marshal(body); err != nil {
			return nil, err
		}
	}
	return c.sendBytes(ctx, method, path, b, "application/json")
}

func (c *Client) sendBytes(ctx context.Context, method, path string, body []byte, ctype string) (*http.Response, error) {
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	return c.sendReader(ctx, method, path, r, ctype)
}

// sendReader is sendBytes with a body streamed from r.
func (c *Client) sendReader(ctx context.Context, method, path string, r io.Reader, ctype string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, r)
	if err != nil {
		return nil, err
	}
	if r != nil {
		req.Header.Set("Content-Type", ctype)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, &Error{Kind: api.KindUnavailable, Message: fmt.Sprintf("orchestrator at %s: %v", c.base, err)}
	}
	if resp.StatusCode >= 400 {
		defer resp.Body.Close()
		var ae api.Error
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if json.Unmarshal(b, &ae) != nil || ae.Kind == "" {
			ae.Kind, ae.Message = "internal", fmt.Sprintf("%s %s: %s: %s", method, path, resp.Status, bytes.TrimSpace(b))
		}
		return nil, &Error{StatusCode: resp.StatusCode, Kind: ae.Kind, Message: ae.Message, Field: ae.Field, ID: ae.ID}
	}
	return resp, nil
}

// Create creates a container (and starts it when req.Start), waiting until
// it is created (running) or failed.
func (c *Client) Create(ctx context.Context, req api.CreateRequest) (*api.Container, error) {
	var out api.Container
	return &out, c.do(ctx, http.MethodPost, "/v1/containers", req, &out)
}

// Start starts a container and waits until it runs.
func (c *Client) Start(ctx context.Context, id string) (*api.Container, error) {
	var out api.Container
	return &out, c.do(ctx, http.MethodPost, "/v1/containers/"+url.PathEscape(id)+"/start", nil, &out)
}

// Stop stops a container: SIGTERM, then SIGKILL after timeout (0: the
// driver's default), at once when force.
func (c *Client) Stop(ctx context.Context, id string, timeout time.Duration, force bool) (*api.Container, error) {
	var out api.Container
	return &out, c.do(ctx, http.MethodPost, "/v1/containers/"+url.PathEscape(id)+"/stop", api.StopRequest{TimeoutMs: timeout.Milliseconds(), Force: force}, &out)
}

// Remove removes a container; a running one only when force.
func (c *Client) Remove(ctx context.Context, id string, force bool) error {
	return c.do(ctx, http.MethodDelete, "/v1/containers/"+url.PathEscape(id)+"?force="+strconv.FormatBool(force), nil, nil)
}

// Get returns a container by id or name.
func (c *Client) Get(ctx context.Context, id string) (*api.Container, error) {
	var out api.Container
	return &out, c.do(ctx, http.MethodGet, "/v1/containers/"+url.PathEscape(id), nil, &out)
}

// ListOptions select containers: running ones, or with All every one not
// removed; other fields combine with AND.
type ListOptions struct {
	All     bool
	Session string
	Status  string
	Labels  map[string]string
}

// List returns the containers opts select.
func (c *Client) List(ctx context.Context, opts ListOptions) ([]api.Container, error) {
	q := url.Values{}
	if opts.All {
		q.Set("all", "true")
	}
	if opts.Session != "" {
		q.Set("session", opts.Session)
	}
	if opts.Status != "" {
		q.Set("status", opts.Status)
	}
	for k, v := range opts.Labels {
		q.Add("label", k+"="+v)
	}
	var out []api.Container
	return out, c.do(ctx, http.MethodGet, "/v1/containers?"+q.Encode(), nil, &out)
}

// Exec runs a command in a running container and returns how it ended.
func (c *Client) Exec(ctx context.Context, id string, req api.ExecRequest) (*api.ExecResult, error) {
	var out api.ExecResult
	return &out, c.do(ctx, http.MethodPost, "/v1/containers/"+url.PathEscape(id)+"/exec", req, &out)
}

// Hosts returns the registered hosts.
func (c *Client) Hosts(ctx context.Context) ([]api.Host, error) {
	var out []api.Host
	return out, c.do(ctx, http.MethodGet, "/v1/hosts", nil, &out)
}

// Alerts returns the alert rules, the webhooks, the alerts pending and
// firing, and the latest limit webhook deliveries (0: the server's
// default).
func (c *Client) Alerts(ctx context.Context, limit int) (*api.Alerts, error) {
	path := "/v1/alerts"
	if limit > 0 {
		path += "?limit=" + strconv.Itoa(limit)
	}
	var out api.Alerts
	return &out, c.do(ctx, http.MethodGet, path, nil, &out)
}

// Drain drains a host (the admin's): placement passes it by and its
// containers move elsewhere, by their reschedule policy; drain false ends
// it. It returns the host as it is then.
func (c *Client) Drain(ctx context.Context, host string, drain bool) (*api.Host, error) {
	var out api.Host
	return &out, c.do(ctx, http.MethodPost, "/v1/hosts/"+url.PathEscape(host)+"/drain", api.DrainRequest{Drain: &drain}, &out)
}

// LogOptions select output.
type LogOptions struct {
	Follow     bool
	Tail       int
	Timestamps bool
	Since      time.Time
}

// Logs returns a container's output. With Follow the sequence goes on
// until the container stops or ctx ends.
func (c *Client) Logs(ctx context.Context, id string, opts LogOptions) iter.Seq2[driver.LogEntry, error] {
	q := url.Values{}
	q.Set("follow", strconv.FormatBool(opts.Follow))
	q.Set("timestamps", strconv.FormatBool(opts.Timestamps))
	if opts.Tail > 0 {
		q.Set("tail", strconv.Itoa(opts.Tail))
	}
	if !opts.Since.IsZero() {
		q.Set("since", opts.Since.Format(time.RFC3339Nano))
	}
	return lines(c, ctx, "/v1/containers/"+url.PathEscape(id)+"/logs?"+q.Encode(), func(b []byte) (driver.LogEntry, error) {
		var e driver.LogEntry
		return e, json.Unmarshal(b, &e)
	})
}

// EventFilter selects events of the audit log.
type EventFilter struct {
	Follow    bool
	Type      string // a prefix, with or without "io.openagent."
	Container string
	Session   string
	Since     time.Time // the cursor: events at or after it
	// From is the cursor as the events stream's sequence: events from it
	// on. Each event served carries its own (events.StreamSeq): the next
	// reader resumes from the last one's plus one.
	From uint64
}

// Events returns events of the audit log, oldest first. With Follow it
// goes on with new events until ctx ends: a watcher from a cursor.
func (c *Client) Events(ctx context.Context, f EventFilter) iter.Seq2[events.Event, error] {
	q := url.Values{}
	q.Set("follow", strconv.FormatBool(f.Follow))
	for k, v := range map[string]string{"type": f.Type, "container": f.Container, "session": f.Session} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if !f.Since.IsZero() {
		q.Set("since", f.Since.Format(time.RFC3339Nano))
	}
	if f.From > 0 {
		q.Set("from", strconv.FormatUint(f.From, 10))
	}
	return lines(c, ctx, "/v1/events?"+q.Encode(), func(b []byte) (events.Event, error) {
		var e events.Event
		return e, json.Unmarshal(b, &e)
	})
}

// lines streams a newline-delimited JSON response.
func lines[T any](c *Client, ctx context.Context, path string, decode func([]byte) (T, error)) iter.Seq2[T, error] {
	return func(yield func(T, error) bool) {
		var zero T
		resp, err := c.send(ctx, http.MethodGet, path, nil)
		if err != nil {
			yield(zero, err)
			return
		}
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 2<<20)
		for sc.Scan() {
			v, err := decode(sc.Bytes())
			if !yield(v, err) {
				return
			}
		}
		if err := sc.Err(); err != nil && ctx.Err() == nil {
			yield(zero, err)
		}
	}
}

// Version returns the orchestrator's version.
func (c *Client) Version(ctx context.Context) (string, error) {
	var out struct{ Version string }
	return out.Version, c.do(ctx, http.MethodGet, "/v1/version", nil, &out)
}
