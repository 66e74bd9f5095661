package events

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"mime"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"

	"github.com/openagent/orchestrator/schemas"
)

// DefaultMaxSize caps an encoded event (headers and data) at NATS's default
// maximum payload, 1 MiB.
const DefaultMaxSize = 1 << 20

// Validator checks events against the CloudEvents spec, the catalog and the
// JSON Schema of their type. It is safe for concurrent use.
type Validator struct {
	schemas map[string]*jsonschema.Schema // by event type
	maxSize int
}

// ValidatorOption configures a Validator.
type ValidatorOption func(*Validator) error

// WithMaxSize sets the size cap of an encoded event, in bytes.
func WithMaxSize(n int) ValidatorOption {
	return func(v *Validator) error {
		if n <= 0 {
			return fmt.Errorf("events: max size must be positive, got %d", n)
		}
		v.maxSize = n
		return nil
	}
}

// NewValidator compiles the schema of every catalog type from the embedded
// schemas directory. It fails if a type has no schema.
func NewValidator(opts ...ValidatorOption) (*Validator, error) {
	v := &Validator{schemas: make(map[string]*jsonschema.Schema, len(catalog)), maxSize: DefaultMaxSize}
	for _, o := range opts {
		if err := o(v); err != nil {
			return nil, err
		}
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	files, err := fs.Glob(schemas.FS, "*.json")
	if err != nil {
		return nil, fmt.Errorf("events: list schemas: %w", err)
	}
	for _, name := range files {
		b, err := fs.ReadFile(schemas.FS, name)
		if err != nil {
			return nil, fmt.Errorf("events: read schema %s: %w", name, err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			return nil, fmt.Errorf("events: parse schema %s: %w", name, err)
		}
		if err := c.AddResource(schemas.BaseURI+name, doc); err != nil {
			return nil, fmt.Errorf("events: add schema %s: %w", name, err)
		}
	}
	for t := range catalog {
		s, err := c.Compile(DataSchema(t))
		if err != nil {
			return nil, fmt.Errorf("events: schema of %s: %w", t, err)
		}
		v.schemas[t] = s
	}
	return v, nil
}

// MaxSize returns the size cap of an encoded event, in bytes.
func (v *Validator) MaxSize() int { return v.maxSize }

var attrName = regexp.MustCompile(`^[a-z0-9]+$`)

// Validate checks the required attributes, the names of extension
// attributes, that the type is in the catalog, and the data against the
// type's schema. An error is a *ValidationError naming the field and rule.
func (v *Validator) Validate(e Event) error {
	if err := checkSpec(e); err != nil {
		return err
	}
	t := e.Type()
	s, ok := v.schemas[t]
	if !ok {
		return &ValidationError{Type: t, Field: "type", Rule: "catalog", Message: fmt.Sprintf("unknown event type %q", t)}
	}
	if ds := e.DataSchema(); ds != "" && ds != DataSchema(t) {
		return &ValidationError{Type: t, Field: "dataschema", Rule: "catalog",
			Message: fmt.Sprintf("is %q; the schema of %s is %q", ds, t, DataSchema(t))}
	}
	if ct := e.DataContentType(); ct != "" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return &ValidationError{Type: t, Field: "datacontenttype", Rule: "media-type",
				Message: fmt.Sprintf("is %q; data must be application/json", ct)}
		}
	}
	if len(e.Data()) == 0 {
		return &ValidationError{Type: t, Field: "data", Rule: "required", Message: "missing"}
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(e.Data()))
	if err != nil {
		return &ValidationError{Type: t, Field: "data", Rule: "json", Message: err.Error()}
	}
	if err := s.Validate(doc); err != nil {
		var ve *jsonschema.ValidationError
		if errors.As(err, &ve) {
			return schemaError(t, ve)
		}
		return &ValidationError{Type: t, Field: "data", Rule: "schema", Message: err.Error()}
	}
	return nil
}

// checkSpec checks what CloudEvents 1.0 itself requires.
func checkSpec(e Event) error {
	if err := checkRequired(e.SpecVersion(), e.ID(), e.Source(), e.Type()); err != nil {
		return err
	}
	for name := range e.Extensions() {
		if !attrName.MatchString(name) {
			return &ValidationError{Type: e.Type(), Field: name, Rule: "attribute-name", Message: "attribute names are lowercase letters and digits"}
		}
	}
	return checkTrace(e)
}

// checkRequired checks the required attributes as they were received.
func checkRequired(specversion, id, source, typ string) error {
	switch {
	case specversion != "1.0":
		return &ValidationError{Type: typ, Field: "specversion", Rule: "const", Message: fmt.Sprintf("is %q; must be \"1.0\"", specversion)}
	case id == "":
		return &ValidationError{Type: typ, Field: "id", Rule: "required", Message: "missing"}
	case source == "":
		return &ValidationError{Type: typ, Field: "source", Rule: "required", Message: "missing"}
	case typ == "":
		return &ValidationError{Field: "type", Rule: "required", Message: "missing"}
	}
	if _, err := url.Parse(source); err != nil {
		return &ValidationError{Type: typ, Field: "source", Rule: "uri-reference", Message: fmt.Sprintf("%q is not a URI-reference", source)}
	}
	return nil
}

var english = message.NewPrinter(language.English)

// schemaError turns the first leaf of a schema validation error into a
// ValidationError naming the field and the rule.
func schemaError(eventType string, ve *jsonschema.ValidationError) *ValidationError {
	parent := ve.InstanceLocation
	for len(ve.Causes) > 0 {
		if k, ok := ve.ErrorKind.(*kind.PropertyNames); ok {
			// The library reuses the location slice of a property name's
			// check; the parent's location is the object's.
			return &ValidationError{Type: eventType, Field: fieldPath(append(slices.Clone(parent), k.Property)),
				Rule: "propertyNames", Message: ve.Causes[0].ErrorKind.LocalizedString(english)}
		}
		parent = ve.InstanceLocation
		ve = ve.Causes[0]
	}
	loc := ve.InstanceLocation
	rule := "schema"
	if kp := ve.ErrorKind.KeywordPath(); len(kp) > 0 {
		rule = kp[len(kp)-1]
	}
	switch k := ve.ErrorKind.(type) {
	case *kind.Required:
		if len(k.Missing) > 0 {
			loc = append(loc[:len(loc):len(loc)], k.Missing[0])
		}
	case *kind.AdditionalProperties:
		if len(k.Properties) > 0 {
			loc = append(loc[:len(loc):len(loc)], k.Properties[0])
		}
	case *kind.FalseSchema:
		rule = "additionalProperties"
	}
	return &ValidationError{Type: eventType, Field: fieldPath(loc), Rule: rule, Message: describeKind(ve.ErrorKind)}
}

// describeKind says what a value broke, in words for people.
func describeKind(k jsonschema.ErrorKind) string {
	num := func(n interface{ Float64() (float64, bool) }) float64 { f, _ := n.Float64(); return f }
	switch k := k.(type) {
	case *kind.ExclusiveMinimum:
		return fmt.Sprintf("must be > %v, got %v", num(k.Want), num(k.Got))
	case *kind.Minimum:
		return fmt.Sprintf("must be >= %v, got %v", num(k.Want), num(k.Got))
	case *kind.Maximum:
		return fmt.Sprintf("must be <= %v, got %v", num(k.Want), num(k.Got))
	case *kind.Required, *kind.FalseSchema, *kind.AdditionalProperties:
		if _, ok := k.(*kind.Required); ok {
			return "missing"
		}
		return "not allowed here"
	}
	return k.LocalizedString(english)
}

// fieldPath renders an instance location as data.a.b[0].c.
func fieldPath(loc []string) string {
	var b strings.Builder
	b.WriteString("data")
	for _, tok := range loc {
		if _, err := strconv.Atoi(tok); err == nil {
			b.WriteString("[" + tok + "]")
			continue
		}
		b.WriteString("." + tok)
	}
	return b.String()
}
