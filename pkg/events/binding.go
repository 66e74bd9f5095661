package events

import (
	"bytes"
	"encoding/json"
	"fmt"
	"mime"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/cloudevents/sdk-go/v2/types"
	"github.com/nats-io/nats.go"
)

// The NATS binding of CloudEvents: in binary content mode every attribute is
// a header named "ce-" + the attribute, its value percent-encoded as the
// CloudEvents HTTP binding says, and the data is the body; datacontenttype
// is written both as ce-datacontenttype (what the official SDK's NATS
// protocols read) and as Content-Type. In structured mode the whole event
// is the body, as application/cloudevents+json.
//
// What is read is read liberally, as the SDK writes it: header names in
// any case, values quoted or not, a '%' that starts no valid escape taken
// as itself; structured mode recognised by any application/cloudevents
// media type and, with no header saying otherwise, by a JSON body that has
// a specversion (the SDK's JetStream protocol sends structured events with
// no headers at all). A value that is not UTF-8 once decoded is refused.
const (
	headerPrefix      = "ce-"
	headerContentType = "Content-Type"
	structuredType    = "application/cloudevents+json"
	structuredPrefix  = "application/cloudevents"
	batchType         = "application/cloudevents-batch+json"
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
		h.Set(headerPrefix+"datacontenttype", pctEncode(ct))
		h.Set(headerContentType, ct)
	}
	m.Data = e.Data()
	return m, nil
}

// header returns the first value of the header called name, in any case:
// nats.Header is case-sensitive, and the bindings' header names are not.
func header(h nats.Header, name string) string {
	if v := h.Get(name); v != "" {
		return v
	}
	for k, vs := range h {
		if len(vs) > 0 && strings.EqualFold(k, name) {
			return vs[0]
		}
	}
	return ""
}

// Mode says how a message carries its event: "structured", "binary", or
// "batch" (which the system does not take); err says why a content type
// could not be read.
func mode(m *nats.Msg) (string, error) {
	if ct := header(m.Header, headerContentType); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil {
			return "", &ValidationError{Field: "content-type", Rule: "media-type", Message: fmt.Sprintf("%q: %v", ct, err)}
		}
		switch {
		case mt == batchType:
			return "batch", nil
		case mt == structuredPrefix || strings.HasPrefix(mt, structuredPrefix+"+"):
			return "structured", nil
		}
	}
	if header(m.Header, headerPrefix+"specversion") == "" && looksStructured(m.Data) {
		return "structured", nil
	}
	return "binary", nil
}

// looksStructured says whether a body is a JSON object with a specversion.
func looksStructured(body []byte) bool {
	b := bytes.TrimLeft(body, " \t\r\n")
	if len(b) == 0 || b[0] != '{' || !bytes.Contains(b, []byte(`"specversion"`)) {
		return false
	}
	var probe struct {
		SpecVersion *string `json:"specversion"`
	}
	return json.Unmarshal(b, &probe) == nil && probe.SpecVersion != nil
}

// Identify reads what it can of a message's id and type, for answering a
// message that is not a valid event under the id its sender chose.
func Identify(m *nats.Msg) (id, typ string) {
	if md, _ := mode(m); md == "structured" {
		var head struct{ ID, Type string }
		_ = json.Unmarshal(m.Data, &head)
		return head.ID, head.Type
	}
	id, _ = headerValue(header(m.Header, headerPrefix+"id"))
	typ, _ = headerValue(header(m.Header, headerPrefix+"type"))
	return id, typ
}

// headerValue decodes a header value: unquoted, percent-decoded, UTF-8.
func headerValue(v string) (string, error) {
	if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
		v = strings.ReplaceAll(v[1:len(v)-1], `\"`, `"`)
	}
	v = pctDecode(v)
	if !utf8.ValidString(v) {
		return "", fmt.Errorf("not valid UTF-8 once decoded: %q", v)
	}
	return v, nil
}

// FromMsg decodes a message in binary or structured content mode. Errors
// match ErrInvalid and name the attribute at fault.
func FromMsg(m *nats.Msg) (Event, error) {
	md, err := mode(m)
	switch {
	case err != nil:
		return Event{}, err
	case md == "batch":
		return Event{}, &ValidationError{Field: "content-type", Rule: "mode", Message: "batch mode (" + batchType + ") is not supported: send one event per message"}
	case md == "structured":
		return fromStructured(m.Data)
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
	spec, _ := headerValue(header(m.Header, headerPrefix+"specversion"))
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
		name := strings.ToLower(key[len(headerPrefix):])
		if name == "specversion" {
			continue
		}
		if !attrName.MatchString(name) {
			return Event{}, &ValidationError{Field: name, Rule: "attribute-name", Message: "attribute names are letters and digits"}
		}
		val, err := headerValue(vals[0])
		if err != nil {
			return Event{}, &ValidationError{Field: name, Rule: "encoding", Message: err.Error()}
		}
		if err := setAttr(&e, name, val); err != nil {
			return Event{}, &ValidationError{Field: name, Rule: "format", Message: err.Error()}
		}
	}
	if e.DataContentType() == "" {
		if ct := header(m.Header, headerContentType); ct != "" {
			e.SetDataContentType(ct)
		}
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

// pctDecode decodes %XX escapes; a '%' that starts none is itself (the
// SDK writes values unescaped).
func pctDecode(s string) string {
	if !strings.Contains(s, "%") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) {
			hi, ok1 := unhex(s[i+1])
			lo, ok2 := unhex(s[i+2])
			if ok1 && ok2 {
				b.WriteByte(hi<<4 | lo)
				i += 2
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
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
