package events

import (
	"encoding/json"
	"fmt"
	"mime"
	"net/url"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
	"github.com/nats-io/nats.go"
)

// The NATS binding of CloudEvents: in binary content mode every attribute is
// a header named "ce-" + the attribute, its value percent-encoded as the
// CloudEvents HTTP binding says, datacontenttype is the Content-Type header
// and the data is the body. In structured mode the whole event is the body,
// as application/cloudevents+json.
const (
	headerPrefix      = "ce-"
	headerContentType = "Content-Type"
	structuredType    = "application/cloudevents+json"
)

// ToMsg encodes an event in binary content mode as a message for subject.
func ToMsg(subject string, e Event) (*nats.Msg, error) {
	m := nats.NewMsg(subject)
	h := m.Header
	h.Set(headerPrefix+"specversion", e.SpecVersion())
	h.Set(headerPrefix+"id", pctEncode(e.ID()))
	h.Set(headerPrefix+"source", pctEncode(e.Source()))
	h.Set(headerPrefix+"type", pctEncode(e.Type()))
	if !e.Time().IsZero() {
		h.Set(headerPrefix+"time", e.Time().UTC().Format(time.RFC3339Nano))
	}
	if s := e.DataSchema(); s != "" {
		h.Set(headerPrefix+"dataschema", pctEncode(s))
	}
	if s := e.Subject(); s != "" {
		h.Set(headerPrefix+"subject", pctEncode(s))
	}
	for name, v := range e.Extensions() {
		s, err := types.Format(v)
		if err != nil {
			return nil, fmt.Errorf("%w: extension %s: %w", ErrInvalid, name, err)
		}
		h.Set(headerPrefix+name, pctEncode(s))
	}
	if ct := e.DataContentType(); ct != "" {
		h.Set(headerContentType, ct)
	}
	m.Data = e.Data()
	return m, nil
}

// FromMsg decodes a message in binary or structured content mode. Errors
// match ErrInvalid and name the attribute at fault.
func FromMsg(m *nats.Msg) (Event, error) {
	if ct := m.Header.Get(headerContentType); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err == nil && mt == structuredType {
			return fromStructured(m.Data)
		}
	}
	return fromBinary(m)
}

func fromStructured(body []byte) (Event, error) {
	// Check the attributes first, so that an error names the attribute
	// rather than quoting the SDK's parser.
	var attrs map[string]json.RawMessage
	if err := json.Unmarshal(body, &attrs); err != nil {
		return Event{}, &ValidationError{Field: "body", Rule: "structured", Message: err.Error()}
	}
	var str struct{ SpecVersion, ID, Source, Type string }
	for name, raw := range attrs {
		if name == "data" || name == "data_base64" {
			continue
		}
		if !attrName.MatchString(name) {
			return Event{}, &ValidationError{Field: name, Rule: "attribute-name", Message: "attribute names are lowercase letters and digits"}
		}
		var p *string
		switch name {
		case "specversion":
			p = &str.SpecVersion
		case "id":
			p = &str.ID
		case "source":
			p = &str.Source
		case "type":
			p = &str.Type
		default:
			continue
		}
		if err := json.Unmarshal(raw, p); err != nil {
			return Event{}, &ValidationError{Field: name, Rule: "type", Message: "must be a string"}
		}
	}
	if err := checkRequired(str.SpecVersion, str.ID, str.Source, str.Type); err != nil {
		return Event{}, err
	}
	var e Event
	if err := json.Unmarshal(body, &e); err != nil {
		return Event{}, &ValidationError{Field: "body", Rule: "structured", Message: err.Error()}
	}
	return e, nil
}

func fromBinary(m *nats.Msg) (Event, error) {
	spec := m.Header.Get(headerPrefix + "specversion")
	if spec == "" {
		return Event{}, &ValidationError{Field: "specversion", Rule: "required",
			Message: "no ce-specversion header and not application/cloudevents+json"}
	}
	if spec != event.CloudEventsVersionV1 {
		return Event{}, &ValidationError{Field: "specversion", Rule: "const", Message: fmt.Sprintf("is %q; must be \"1.0\"", spec)}
	}
	e := event.New(spec)
	for key, vals := range m.Header {
		if len(key) <= len(headerPrefix) || !strings.EqualFold(key[:len(headerPrefix)], headerPrefix) || len(vals) == 0 {
			continue
		}
		name := key[len(headerPrefix):]
		if name == "specversion" {
			continue
		}
		if !attrName.MatchString(name) {
			return Event{}, &ValidationError{Field: name, Rule: "attribute-name", Message: "attribute names are lowercase letters and digits"}
		}
		val, err := pctDecode(vals[0])
		if err != nil {
			return Event{}, &ValidationError{Field: name, Rule: "percent-encoding", Message: err.Error()}
		}
		if err := setAttr(&e, name, val); err != nil {
			return Event{}, &ValidationError{Field: name, Rule: "format", Message: err.Error()}
		}
	}
	if ct := m.Header.Get(headerContentType); ct != "" {
		e.SetDataContentType(ct)
	}
	if len(m.Data) > 0 {
		e.DataEncoded = m.Data
	}
	return e, nil
}

func setAttr(e *Event, name, val string) error {
	switch name {
	case "id":
		e.SetID(val)
	case "source":
		if _, err := url.Parse(val); err != nil {
			return fmt.Errorf("%q is not a URI-reference", val)
		}
		e.SetSource(val)
	case "type":
		e.SetType(val)
	case "subject":
		e.SetSubject(val)
	case "dataschema":
		e.SetDataSchema(val)
	case "time":
		t, err := time.Parse(time.RFC3339Nano, val)
		if err != nil {
			return fmt.Errorf("%q is not an RFC 3339 time", val)
		}
		e.SetTime(t)
	case "datacontenttype":
		e.SetDataContentType(val)
	default:
		e.SetExtension(name, val)
	}
	return nil
}

// pctEncode percent-encodes space, '"', '%' and every byte outside printable
// ASCII, as the CloudEvents HTTP binding requires of header values.
func pctEncode(s string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if mustEscape(s[i]) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if mustEscape(c) {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xF])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

func mustEscape(c byte) bool { return c <= 0x20 || c >= 0x7F || c == '"' || c == '%' }

func pctDecode(s string) (string, error) {
	if !strings.Contains(s, "%") {
		return s, nil
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", fmt.Errorf("truncated escape at byte %d", i)
		}
		hi, ok1 := unhex(s[i+1])
		lo, ok2 := unhex(s[i+2])
		if !ok1 || !ok2 {
			return "", fmt.Errorf("bad escape %q at byte %d", s[i:i+3], i)
		}
		b.WriteByte(hi<<4 | lo)
		i += 2
	}
	return b.String(), nil
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// msgSize is what a message costs against the size cap: its body and headers.
func msgSize(m *nats.Msg) int {
	n := len(m.Data)
	for k, vs := range m.Header {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}

// CheckSize refuses a message larger than the validator's size cap.
func (v *Validator) CheckSize(m *nats.Msg) error {
	if n := msgSize(m); n > v.maxSize {
		return &ValidationError{Type: m.Header.Get(headerPrefix + "type"), Field: "size", Rule: "maxSize",
			Message: fmt.Sprintf("%d bytes exceeds the cap of %d", n, v.maxSize)}
	}
	return nil
}
