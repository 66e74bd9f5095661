package system_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/openagent/orchestrator/pkg/events"
)

// The OpenAPI document, as a validator nobody here wrote reads it, accepts
// the requests and the answers of POST /v1/containers: plain JSON, and the
// same request as a CloudEvent in structured and in binary mode.
func TestOpenAPIValidatesExchanges(t *testing.T) {
	e := newEnv(t)
	code, _, raw := e.call("GET", "/v1/openapi.json", "", nil)
	if code != http.StatusOK {
		t.Fatalf("GET /v1/openapi.json: %d", code)
	}
	doc, err := openapi3.NewLoader().LoadFromData(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := doc.Validate(e.ctx); err != nil {
		t.Fatalf("the document is not valid OpenAPI: %v", err)
	}
	doc.Servers = openapi3.Servers{{URL: e.sys.HTTPURL}}
	router, err := legacy.NewRouter(doc)
	if err != nil {
		t.Fatal(err)
	}
	openapi3filter.RegisterBodyDecoder("application/cloudevents+json", openapi3filter.JSONBodyDecoder)

	create, _ := json.Marshal(fakeSpec("--forever"))
	structured, _ := json.Marshal(map[string]any{"specversion": "1.0", "id": "openapi-structured", "source": "/tests/openapi",
		"type": events.ContainerCreateRequested, "datacontenttype": "application/json", "data": json.RawMessage(create)})
	for _, tc := range []struct {
		name    string
		ctype   string
		headers map[string]string
		body    []byte
		status  int
	}{
		{"json", "application/json", nil, create, http.StatusCreated},
		{"structured CloudEvent", "application/cloudevents+json", nil, structured, http.StatusAccepted},
		{"binary CloudEvent", "application/json", map[string]string{"ce-specversion": "1.0", "ce-id": "openapi-binary",
			"ce-source": "/tests/openapi", "ce-type": events.ContainerCreateRequested}, create, http.StatusAccepted},
		{"a body it does not read", "text/plain", nil, []byte("hello"), http.StatusUnsupportedMediaType},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(e.ctx, "POST", e.sys.HTTPURL+"/v1/containers", bytes.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", tc.ctype)
			req.Header.Set("Authorization", "Bearer "+e.sys.AdminToken())
			for k, v := range tc.headers {
				req.Header.Set(k, v)
			}
			route, params, err := router.FindRoute(req)
			if err != nil {
				t.Fatal(err)
			}
			in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
				Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}
			if tc.status != http.StatusUnsupportedMediaType {
				if err := openapi3filter.ValidateRequest(e.ctx, in); err != nil {
					t.Fatalf("the document refuses the request: %v", err)
				}
			}
			req.Body = io.NopCloser(bytes.NewReader(tc.body))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status {
				t.Fatalf("answered %d %s; want %d", resp.StatusCode, b, tc.status)
			}
			if err := openapi3filter.ValidateResponse(e.ctx, &openapi3filter.ResponseValidationInput{RequestValidationInput: in,
				Status: resp.StatusCode, Header: resp.Header, Body: io.NopCloser(bytes.NewReader(b))}); err != nil {
				t.Fatalf("the document refuses the answer %d %s: %v", resp.StatusCode, b, err)
			}
		})
	}
}
