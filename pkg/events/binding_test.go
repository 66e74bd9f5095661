package events

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	cejs "github.com/cloudevents/sdk-go/protocol/nats_jetstream/v2"
	cloudevents "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go"
)

func sampleEvent(t *testing.T) Event {
	t.Helper()
	e, err := New(ContainerCreated, "/hosts/zürich-1",
		map[string]any{"containerId": "c-1", "hostId": "host-a", "driver": "local", "image": "host"},
		WithHost("host-a"), WithContainer("c-1"), WithSession("sess-1"),
		WithTrace("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "vendor=ä ö, x=\"1\" 100%"),
		WithExtension(ExtCorrelationID, "req 1/日本"),
		WithTime(time.Date(2026, 11, 30, 10, 0, 0, 123456789, time.UTC)))
	if err != nil {
		t.Fatal(err)
	}
	e.SetSubject("ünïcödé subject")
	return e
}

// compareEvents compares what a consumer sees of two events.
func compareEvents(t *testing.T, got, want Event) {
	t.Helper()
	type view struct {
		ID, Source, Type, Subject, Schema, CT, Spec string
		Time                                        time.Time
		Ext                                         map[string]string
		Data                                        any
	}
	mk := func(e Event) view {
		v := view{e.ID(), e.Source(), e.Type(), e.Subject(), e.DataSchema(), e.DataContentType(), e.SpecVersion(), e.Time(), map[string]string{}, nil}
		for k := range e.Extensions() {
			v.Ext[k] = Ext(e, k)
		}
		_ = json.Unmarshal(e.Data(), &v.Data)
		return v
	}
	if d := cmp.Diff(mk(want), mk(got)); d != "" {
		t.Fatalf("round trip changed the event (-want +got):\n%s", d)
	}
}

func TestBinaryRoundTrip(t *testing.T) {
	e := sampleEvent(t)
	m, err := ToMsg("openagent.events.container.c-1.container.created", e)
	if err != nil {
		t.Fatal(err)
	}
	// Binary mode: attributes in ce- headers, percent-encoded, data as the body.
	for h, want := range map[string]string{
		// The SDK keeps source as a URI, already escaped (z%C3%BC); the
		// binding escapes its '%' again.
		"ce-source":          "/hosts/z%25C3%25BCrich-1",
		"ce-tracestate":      "vendor=%C3%A4%20%C3%B6,%20x=%221%22%20100%25",
		"ce-correlationid":   "req%201/%E6%97%A5%E6%9C%AC",
		"ce-specversion":     "1.0",
		"Content-Type":       "application/json",
		"ce-datacontenttype": "application/json",
	} {
		if got := m.Header.Get(h); got != want {
			t.Errorf("header %s = %q; want %q", h, got, want)
		}
	}
	if string(m.Data) != string(e.Data()) {
		t.Errorf("body %q; want the data %q", m.Data, e.Data())
	}
	got, err := FromMsg(m)
	if err != nil {
		t.Fatal(err)
	}
	compareEvents(t, got, e)
}

func TestStructuredReceipt(t *testing.T) {
	e := sampleEvent(t)
	body, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	m := nats.NewMsg("openagent.events.x")
	m.Header.Set("Content-Type", "application/cloudevents+json; charset=utf-8")
	m.Data = body
	got, err := FromMsg(m)
	if err != nil {
		t.Fatal(err)
	}
	compareEvents(t, got, e)
}

func TestBindingRejects(t *testing.T) {
	for _, tc := range []struct {
		name    string
		headers map[string]string
		field   string
	}{
		{"no specversion", map[string]string{"ce-id": "1"}, "specversion"},
		{"old specversion", map[string]string{"ce-specversion": "0.3"}, "specversion"},
		{"not an attribute name", map[string]string{"ce-specversion": "1.0", "ce-host_id": "a"}, "host_id"},
		{"not UTF-8 once decoded", map[string]string{"ce-specversion": "1.0", "ce-id": "a%FF%FE"}, "id"},
		{"batch mode", map[string]string{"Content-Type": "application/cloudevents-batch+json"}, "content-type"},
		{"bad time", map[string]string{"ce-specversion": "1.0", "ce-time": "yesterday"}, "time"},
		{"bad source", map[string]string{"ce-specversion": "1.0", "ce-source": "http://[::1"}, "source"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := nats.NewMsg("s")
			for k, v := range tc.headers {
				m.Header[k] = []string{v}
			}
			_, err := FromMsg(m)
			var ve *ValidationError
			if !errors.As(err, &ve) || ve.Field != tc.field {
				t.Fatalf("got %v; want an error naming %q", err, tc.field)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("%v does not match ErrInvalid", err)
			}
		})
	}
}

func TestPercentEncoding(t *testing.T) {
	for in, want := range map[string]string{
		"plain":        "plain",
		"a b":          "a%20b",
		`"q"`:          "%22q%22",
		"100%":         "100%25",
		"€":            "%E2%82%AC",
		"tab\there\n":  "tab%09here%0A",
		"~!#$&'()*+,/": "~!#$&'()*+,/",
	} {
		if got := pctEncode(in); got != want {
			t.Errorf("pctEncode(%q) = %q; want %q", in, got, want)
		}
		if back := pctDecode(want); back != in {
			t.Errorf("pctDecode(%q) = %q; want %q", want, back, in)
		}
	}
}

func FuzzFromMsg(f *testing.F) {
	f.Add("1.0", "id-1", "/src", "io.openagent.container.started.requested", "x%20y", []byte(`{"containerId":"c"}`))
	f.Add("1.0", "", "http://[::1", "", "%zz", []byte(`{`))
	v := newValidator(f)
	f.Fuzz(func(t *testing.T, spec, id, source, typ, ext string, data []byte) {
		m := nats.NewMsg("s")
		m.Header["ce-specversion"] = []string{spec}
		m.Header["ce-id"] = []string{id}
		m.Header["ce-source"] = []string{source}
		m.Header["ce-type"] = []string{typ}
		m.Header["ce-correlationid"] = []string{ext}
		m.Header.Set("Content-Type", "application/json")
		m.Data = data
		e, err := FromMsg(m)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("decode error %v does not match ErrInvalid", err)
			}
			return
		}
		if err := v.Validate(e); err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatalf("validation error %v does not match ErrInvalid", err)
		}
		// The structured form must decode too.
		m.Header.Set("Content-Type", "application/cloudevents+json")
		m.Data = data
		if _, err := FromMsg(m); err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatalf("structured decode error %v does not match ErrInvalid", err)
		}
	})
}

// Read as the bindings say and as the official SDK writes: header names in
// any case, quoted values, a '%' that starts no escape, any
// application/cloudevents media type, and a structured body with no
// headers at all.
func TestBindingIsLiberal(t *testing.T) {
	binary := func(h map[string]string) *nats.Msg {
		m := nats.NewMsg("s")
		for k, v := range h {
			m.Header[k] = []string{v}
		}
		m.Data = []byte(`{"x":1}`)
		return m
	}
	for name, tc := range map[string]struct {
		m          *nats.Msg
		id, source string
		ext        string
	}{
		"upper-case names": {binary(map[string]string{"CE-SPECVERSION": "1.0", "CE-ID": "up-1", "Ce-Source": "/s", "CE-TYPE": "t", "CE-HostID": "h"}), "up-1", "/s", "h"},
		"quoted values":    {binary(map[string]string{"ce-specversion": `"1.0"`, "ce-id": `"q-1"`, "ce-source": `"/s"`, "ce-type": "t"}), "q-1", "/s", ""},
		"a bare percent":   {binary(map[string]string{"ce-specversion": "1.0", "ce-id": "100%", "ce-source": "/s", "ce-type": "t"}), "100%", "/s", ""},
		"structured, any case and parameters": {func() *nats.Msg {
			m := nats.NewMsg("s")
			m.Header.Set("content-type", "Application/CloudEvents+JSON; charset=UTF-8")
			m.Data = []byte(`{"specversion":"1.0","id":"st-1","source":"/s","type":"t","hostid":"h"}`)
			return m
		}(), "st-1", "/s", "h"},
		"structured, no headers": {&nats.Msg{Subject: "s", Data: []byte(`{"specversion":"1.0","id":"nh-1","source":"/s","type":"t"}`)}, "nh-1", "/s", ""},
	} {
		t.Run(name, func(t *testing.T) {
			e, err := FromMsg(tc.m)
			if err != nil {
				t.Fatal(err)
			}
			if e.ID() != tc.id || e.Source() != tc.source || Ext(e, "hostid") != tc.ext {
				t.Fatalf("read id %q source %q hostid %q; want %q %q %q", e.ID(), e.Source(), Ext(e, "hostid"), tc.id, tc.source, tc.ext)
			}
			if id, _ := Identify(tc.m); id != tc.id {
				t.Fatalf("Identify: %q; want %q", id, tc.id)
			}
		})
	}
}

// A message that is not a valid event is still answered under the id its
// sender chose, when the id can be read.
func TestIdentifyInvalidEvents(t *testing.T) {
	structured := &nats.Msg{Subject: "s", Header: nats.Header{"Content-Type": {"application/cloudevents+json"}},
		Data: []byte(`{"specversion":"1.0","id":"mine","source":"/s","type":"io.openagent.container.create.requested","data":{"spec":7}}`)}
	upper := &nats.Msg{Subject: "s", Header: nats.Header{"CE-SPECVERSION": {"1.0"}, "CE-ID": {"mine%202"}, "CE-TYPE": {"x"}}}
	for m, want := range map[*nats.Msg]string{structured: "mine", upper: "mine 2"} {
		if id, _ := Identify(m); id != want {
			t.Errorf("Identify: %q; want %q", id, want)
		}
	}
}

// The official SDK's NATS JetStream protocol reads what ToMsg writes,
// datacontenttype among it; and what it writes, in binary or structured
// mode, FromMsg reads.
func TestOfficialSDKReadsAndWrites(t *testing.T) {
	e := sampleEvent(t)
	m, err := ToMsg("openagent.events.x", e)
	if err != nil {
		t.Fatal(err)
	}
	read, err := binding.ToEvent(context.Background(), cejs.NewMessage(m))
	if err != nil {
		t.Fatal(err)
	}
	if read.DataContentType() != "application/json" || read.ID() != e.ID() || read.Type() != e.Type() {
		t.Fatalf("the SDK read content type %q, id %q, type %q; want application/json, %q, %q", read.DataContentType(), read.ID(), read.Type(), e.ID(), e.Type())
	}

	sent := cloudevents.NewEvent()
	sent.SetID("sdk 1/ü")
	sent.SetSource("/sdk")
	sent.SetType("io.example.sdk")
	sent.SetExtension("hostid", "h-1")
	if err := sent.SetData(cloudevents.ApplicationJSON, map[string]int{"n": 1}); err != nil {
		t.Fatal(err)
	}
	for name, ctx := range map[string]context.Context{
		"binary":     binding.WithForceBinary(context.Background()),
		"structured": binding.WithForceStructured(context.Background()),
	} {
		t.Run(name, func(t *testing.T) {
			out := nats.NewMsg("s")
			var body bytes.Buffer
			h, err := cejs.WriteMsg(ctx, binding.ToMessage(&sent), &body)
			if err != nil {
				t.Fatal(err)
			}
			out.Header, out.Data = h, body.Bytes()
			if out.Header == nil {
				out.Header = nats.Header{}
			}
			got, err := FromMsg(out)
			if err != nil {
				t.Fatal(err)
			}
			if got.ID() != sent.ID() || Ext(got, "hostid") != "h-1" || got.DataContentType() != cloudevents.ApplicationJSON || string(got.Data()) != `{"n":1}` {
				t.Fatalf("read id %q hostid %q content type %q data %s", got.ID(), Ext(got, "hostid"), got.DataContentType(), got.Data())
			}
		})
	}
}
