package client

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/openagent/orchestrator/pkg/api"
)

// CreateSession makes a session and returns once its sandbox takes code.
//
//	s, err := c.CreateSession(ctx, api.SessionRequest{Languages: []string{"python"}})
//	res, err := c.RunCode(ctx, s.ID, api.RunCodeRequest{Code: "print(sum([1, 2, 3]))"})
//	fmt.Print(res.Stdout) // 6
func (c *Client) CreateSession(ctx context.Context, req api.SessionRequest) (*api.Session, error) {
	var out api.Session
	return &out, c.do(ctx, http.MethodPost, "/v1/sessions", req, &out)
}

// Session returns a session.
func (c *Client) Session(ctx context.Context, id string) (*api.Session, error) {
	var out api.Session
	return &out, c.do(ctx, http.MethodGet, "/v1/sessions/"+url.PathEscape(id), nil, &out)
}

// Sessions returns live sessions, or with all every one.
func (c *Client) Sessions(ctx context.Context, all bool) ([]api.Session, error) {
	var out []api.Session
	path := "/v1/sessions"
	if all {
		path += "?all=true"
	}
	return out, c.do(ctx, http.MethodGet, path, nil, &out)
}

// ExtendSession makes a session expire timeout from now.
func (c *Client) ExtendSession(ctx context.Context, id string, timeout time.Duration) (*api.Session, error) {
	var out api.Session
	return &out, c.do(ctx, http.MethodPost, "/v1/sessions/"+url.PathEscape(id)+"/extend", api.ExtendRequest{TimeoutMs: timeout.Milliseconds()}, &out)
}

// CloseSession ends a session and removes its sandbox.
func (c *Client) CloseSession(ctx context.Context, id string) (*api.Session, error) {
	var out api.Session
	return &out, c.do(ctx, http.MethodDelete, "/v1/sessions/"+url.PathEscape(id), nil, &out)
}

// RunCode runs code in a session and returns how it ended.
func (c *Client) RunCode(ctx context.Context, id string, req api.RunCodeRequest) (*api.ExecResult, error) {
	var out api.ExecResult
	return &out, c.do(ctx, http.MethodPost, "/v1/sessions/"+url.PathEscape(id)+"/exec", req, &out)
}

// WriteFile puts data at path in a session's workspace.
func (c *Client) WriteFile(ctx context.Context, id, path string, data []byte) error {
	return c.raw(ctx, http.MethodPut, "/v1/sessions/"+url.PathEscape(id)+"/files?path="+url.QueryEscape(path), data, nil)
}

// ReadFile gets the file at path in a session's workspace.
func (c *Client) ReadFile(ctx context.Context, id, path string) ([]byte, error) {
	var out []byte
	return out, c.raw(ctx, http.MethodGet, "/v1/sessions/"+url.PathEscape(id)+"/files?path="+url.QueryEscape(path), nil, &out)
}

// SetPool creates or changes the warm pool of a profile; size 0 empties it.
func (c *Client) SetPool(ctx context.Context, p api.Pool) (*api.Pool, error) {
	var out api.Pool
	return &out, c.do(ctx, http.MethodPut, "/v1/pools", p, &out)
}

// RemovePool removes the pool of p's profile (driver, image, cpu, memory,
// egress) and its warm sandboxes.
func (c *Client) RemovePool(ctx context.Context, p api.Pool) error {
	return c.do(ctx, http.MethodDelete, "/v1/pools", p, nil)
}

// Pools lists the warm pools.
func (c *Client) Pools(ctx context.Context) ([]api.Pool, error) {
	var out []api.Pool
	return out, c.do(ctx, http.MethodGet, "/v1/pools", nil, &out)
}

// RunCodeStream runs code in a session, calling onOutput with its output
// ("stdout" or "stderr") as it is produced, and returns how it ended.
func (c *Client) RunCodeStream(ctx context.Context, id string, req api.RunCodeRequest, onOutput func(stream, data string)) (*api.ExecResult, error) {
	resp, err := c.send(ctx, http.MethodPost, "/v1/sessions/"+url.PathEscape(id)+"/exec?stream=true", req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	var event string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "event: "):
			event = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			data := []byte(strings.TrimPrefix(line, "data: "))
			switch event {
			case "stdout", "stderr":
				var s string
				if json.Unmarshal(data, &s) == nil {
					onOutput(event, s)
				}
			case "result":
				var res api.ExecResult
				return &res, json.Unmarshal(data, &res)
			case "error":
				var ae api.Error
				_ = json.Unmarshal(data, &ae)
				return nil, &Error{StatusCode: resp.StatusCode, Kind: ae.Kind, Message: ae.Message, Field: ae.Field, ID: ae.ID}
			}
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return nil, &Error{Kind: api.KindUnavailable, Message: "the stream ended without a result"}
}
