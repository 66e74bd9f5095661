package client

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/openagent/orchestrator/pkg/api"
	"github.com/openagent/orchestrator/pkg/events"
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
	_, err := c.WriteFileFrom(ctx, id, path, bytes.NewReader(data))
	return err
}

// WriteFileFrom streams what r holds to path in a session's workspace, of
// any size up to the cap, hashing it on the way: the SHA-256 the session
// reports for what it wrote must be the one sent.
func (c *Client) WriteFileFrom(ctx context.Context, id, path string, r io.Reader) (*events.ObjectRef, error) {
	h := sha256.New()
	resp, err := c.sendReader(ctx, http.MethodPut, filesPath(id, path), io.TeeReader(r, h), "application/octet-stream")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var ref events.ObjectRef
	if err := json.NewDecoder(resp.Body).Decode(&ref); err != nil {
		return nil, fmt.Errorf("client: the answer to a file's upload: %w", err)
	}
	if sent := hex.EncodeToString(h.Sum(nil)); ref.SHA256 != sent {
		return &ref, &Error{Kind: api.KindUnavailable, Field: "body", Message: fmt.Sprintf("%s arrived with SHA-256 %s, not the %s sent", path, ref.SHA256, sent)}
	}
	return &ref, nil
}

// ReadFile gets the file at path in a session's workspace.
func (c *Client) ReadFile(ctx context.Context, id, path string) ([]byte, error) {
	var buf bytes.Buffer
	if _, err := c.ReadFileTo(ctx, id, path, &buf); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// ReadFileTo streams the file at path in a session's workspace to w,
// hashing it on the way: what arrived must have the size and the SHA-256
// the session sent with it, or it is an error (w then holds a part).
func (c *Client) ReadFileTo(ctx context.Context, id, path string, w io.Writer) (*events.ObjectRef, error) {
	resp, err := c.sendReader(ctx, http.MethodGet, filesPath(id, path), nil, "")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(w, h), resp.Body)
	if err != nil {
		return nil, &Error{Kind: api.KindUnavailable, Message: fmt.Sprintf("%s: cut short after %d bytes: %v", path, n, err)}
	}
	got := "sha-256=:" + base64.StdEncoding.EncodeToString(h.Sum(nil)) + ":"
	if want := resp.Header.Get("Repr-Digest"); want != got || resp.ContentLength >= 0 && n != resp.ContentLength {
		return nil, &Error{Kind: api.KindUnavailable, Message: fmt.Sprintf("%s arrived as %d bytes with %s; the session sent %d bytes with %s", path, n, got, resp.ContentLength, want)}
	}
	sum := h.Sum(nil)
	return &events.ObjectRef{Name: path, Size: uint64(n), SHA256: hex.EncodeToString(sum)}, nil
}

func filesPath(id, path string) string {
	return "/v1/sessions/" + url.PathEscape(id) + "/files?path=" + url.QueryEscape(path)
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
