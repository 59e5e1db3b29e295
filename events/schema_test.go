package events_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"gopkg.in/yaml.v3"

	"github.com/linkpipe/linkpipe/events"
	"github.com/linkpipe/linkpipe/internal/npmdeps"
)

// The contract for publishers in other languages lives in schema/ (JSON
// Schema 2020-12, one file per action subject and per lifecycle type) and
// asyncapi.yaml. The tests below keep it in step with the Go types; they
// derive what must be there from this package's source (its Subject* and
// Type* constants) and its types (json tags, recursively), so a new
// action, lifecycle type or field fails here until the contract says it.

const schemaBase = "https://github.com/linkpipe/linkpipe/events/schema/"

// contract is the loaded schema directory.
type contract struct {
	compiler *jsonschema.Compiler
	docs     map[string]map[string]any // file name -> parsed document
	compiled map[string]*jsonschema.Schema
}

func loadContract(t *testing.T) *contract {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("schema", "*.json"))
	if err != nil || len(files) == 0 {
		t.Fatalf("schema files: %v %v", files, err)
	}
	c := &contract{compiler: jsonschema.NewCompiler(), docs: map[string]map[string]any{}, compiled: map[string]*jsonschema.Schema{}}
	c.compiler.DefaultDraft(jsonschema.Draft2020)
	c.compiler.AssertFormat()
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		name := filepath.Base(f)
		m, ok := doc.(map[string]any)
		if !ok {
			t.Fatalf("%s is not a JSON object", f)
		}
		if m["$id"] != schemaBase+name {
			t.Errorf("%s: $id is %v, want %s", f, m["$id"], schemaBase+name)
		}
		if m["$schema"] != "https://json-schema.org/draft/2020-12/schema" {
			t.Errorf("%s: $schema is %v, want 2020-12", f, m["$schema"])
		}
		c.docs[name] = m
		if err := c.compiler.AddResource(schemaBase+name, doc); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// schema compiles schema/<name>, failing the test when it is missing.
func (c *contract) schema(t *testing.T, name string) *jsonschema.Schema {
	t.Helper()
	if s, ok := c.compiled[name]; ok {
		return s
	}
	if _, ok := c.docs[name]; !ok {
		t.Fatalf("events/schema/%s is missing: the contract must describe it", name)
	}
	s, err := c.compiler.Compile(schemaBase + name)
	if err != nil {
		t.Fatalf("schema %s: %v", name, err)
	}
	c.compiled[name] = s
	return s
}

func validate(s *jsonschema.Schema, data []byte) error {
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return err
	}
	return s.Validate(inst)
}

// constants returns this package's string constants whose names start
// with prefix, read from its (non-test) source: the list of subjects and
// types is the code's, not a copy kept by hand.
func constants(t *testing.T, prefix string) map[string]string {
	t.Helper()
	fset := token.NewFileSet()
	pkgs, err := parser.ParseDir(fset, ".", func(fi os.FileInfo) bool { return !strings.HasSuffix(fi.Name(), "_test.go") }, 0)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, f := range pkgs["events"].Files {
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, n := range vs.Names {
					if !strings.HasPrefix(n.Name, prefix) || i >= len(vs.Values) {
						continue
					}
					if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
						v, _ := strconv.Unquote(lit.Value)
						out[n.Name] = v
					}
				}
			}
		}
	}
	if len(out) == 0 {
		t.Fatalf("no %s* constants found", prefix)
	}
	return out
}

// actionSubjects are the values of the Subject* constants that name one
// action subject (not a wildcard filter).
func actionSubjects(t *testing.T) []string {
	var out []string
	for _, v := range constants(t, "Subject") {
		if strings.HasPrefix(v, "actions.") && !strings.ContainsAny(v, "*>") {
			out = append(out, v)
		}
	}
	sort.Strings(out)
	return out
}

// lifecycleTypes are the values of the Type* constants.
func lifecycleTypes(t *testing.T) []string {
	var out []string
	for _, v := range constants(t, "Type") {
		out = append(out, v)
	}
	sort.Strings(out)
	return out
}

func readGolden(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "golden", name))
	if err != nil {
		t.Fatalf("%v: every action and lifecycle type needs a golden file (add a sample to samples() or lifecycleSamples() and run go test ./events -run Golden -update)", err)
	}
	return b
}

// TestSchemaForEveryAction: each action subject has schema/<subject>.json,
// its golden file validates, and the schema describes exactly the fields
// of the Go type Decode returns for that subject, recursively.
func TestSchemaForEveryAction(t *testing.T) {
	c := loadContract(t)
	for _, subject := range actionSubjects(t) {
		t.Run(subject, func(t *testing.T) {
			golden := readGolden(t, subject+".json")
			a, err := events.Decode(subject, golden)
			if err != nil {
				t.Fatalf("golden file does not decode: %v", err)
			}
			s := c.schema(t, subject+".json")
			if err := validate(s, golden); err != nil {
				t.Fatalf("golden file fails its schema: %v", err)
			}
			c.checkFields(t, reflect.TypeOf(a).Elem(), c.node(subject+".json"), subject)
		})
	}
}

// TestSchemaForEveryLifecycleType: each lifecycle type has
// schema/links.<type>.json, its golden file validates (and fails every
// other type's schema), and link-event.json describes exactly LinkEvent's
// fields.
func TestSchemaForEveryLifecycleType(t *testing.T) {
	c := loadContract(t)
	c.checkFields(t, reflect.TypeOf(events.LinkEvent{}), c.node("link-event.json"), "link-event.json")
	types := lifecycleTypes(t)
	for _, typ := range types {
		t.Run(typ, func(t *testing.T) {
			golden := readGolden(t, "links."+typ+".json")
			var ev events.LinkEvent
			dec := json.NewDecoder(bytes.NewReader(golden))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&ev); err != nil || ev.Type != typ {
				t.Fatalf("golden file: %v (type %q)", err, ev.Type)
			}
			if err := validate(c.schema(t, "links."+typ+".json"), golden); err != nil {
				t.Fatalf("golden file fails its schema: %v", err)
			}
			for _, other := range types {
				if _, ok := c.docs["links."+other+".json"]; !ok {
					continue // reported in its own subtest
				}
				if other != typ && validate(c.schema(t, "links."+other+".json"), golden) == nil {
					t.Errorf("a %s event passes the %s schema", typ, other)
				}
			}
		})
	}
	// An email without a link (an in-person appointment's) reports under
	// its mail id, with no purpose.
	linkless, _ := json.Marshal(&events.LinkEvent{EventID: "sent-Mabc-appointment_confirmed", Type: events.TypeSent,
		LinkID: "Mabc-appointment_confirmed", PracticeID: "acme", ClientID: "c-7", At: time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC),
		MailID: "Mabc-appointment_confirmed", MailKind: "appointment_confirmed", MessageID: "ses-1", AppointmentID: "appt-2"})
	if err := validate(c.schema(t, "links."+events.TypeSent+".json"), linkless); err != nil {
		t.Errorf("the sent event of an email without a link fails its schema: %v", err)
	}
	// No schema for a type the code does not have.
	for name := range c.docs {
		if typ, ok := strings.CutPrefix(name, "links."); ok {
			if typ = strings.TrimSuffix(typ, ".json"); !slices.Contains(types, typ) {
				t.Errorf("schema/%s describes a lifecycle type events does not define", name)
			}
		}
		if subject, ok := strings.CutSuffix(name, ".json"); ok && strings.HasPrefix(subject, "actions.") && !slices.Contains(actionSubjects(t), subject) {
			t.Errorf("schema/%s describes an action subject events does not define", name)
		}
	}
}

// TestSchemaRefusesUnknownFields: like Decode, every object of the
// contract refuses a field it does not define (additionalProperties
// false), at every depth of every golden file.
func TestSchemaRefusesUnknownFields(t *testing.T) {
	c := loadContract(t)
	files, _ := filepath.Glob(filepath.Join("testdata", "golden", "*.json"))
	for _, f := range files {
		name := filepath.Base(f)
		s := c.schema(t, name)
		var doc any
		if err := json.Unmarshal(readGolden(t, name), &doc); err != nil {
			t.Fatal(err)
		}
		for _, path := range objectPaths(doc, "") {
			withExtra := cloneJSON(doc)
			objectAt(withExtra, path)["not_in_contract"] = 1
			b, _ := json.Marshal(withExtra)
			if validate(s, b) == nil {
				t.Errorf("%s: the schema accepts an unknown field in %q", name, "/"+path)
			}
		}
	}
}

// TestSchemaAgreesWithDecode runs the fuzz corpus (the inputs that once
// broke or nearly broke Decode) and the golden files through both: what
// Decode accepts, the schema accepts; what Decode refuses as malformed or
// of an unsupported version (a shape error), the schema refuses. The
// schema cannot check everything Decode does (a time zone that exists,
// ends_at after starts_at, policy bounds), so a FieldError may pass it.
func TestSchemaAgreesWithDecode(t *testing.T) {
	c := loadContract(t)
	corpus, _ := filepath.Glob(filepath.Join("testdata", "fuzz", "FuzzDecode", "*"))
	subjects := actionSubjects(t)
	n := 0
	for _, f := range corpus {
		subject, data, err := readCorpusEntry(f)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if !slices.Contains(subjects, subject) || len(data) > events.MaxEventSize {
			continue
		}
		if _, err := jsonschema.UnmarshalJSON(bytes.NewReader(data)); err != nil {
			continue // not one JSON value: nothing for a schema to say
		}
		n++
		s := c.schema(t, subject+".json")
		_, decErr := events.Decode(subject, data)
		schemaErr := validate(s, data)
		switch {
		case decErr == nil && schemaErr != nil && validate(s, lowerKeys(t, data)) == nil:
			// encoding/json matches keys case-insensitively, so Decode
			// also takes "EVENT_ID"; the contract's names are the
			// snake_case ones, and the schema holds publishers to them.
			t.Logf("%s: Decode accepts keys in another case, the schema does not (documented)", filepath.Base(f))
		case decErr == nil && schemaErr != nil:
			t.Errorf("%s: Decode accepts, the schema refuses: %v", filepath.Base(f), schemaErr)
		case (errors.Is(decErr, events.ErrMalformed) || errors.Is(decErr, events.ErrUnsupportedVersion)) && schemaErr == nil:
			t.Errorf("%s: Decode refuses (%v), the schema accepts", filepath.Base(f), decErr)
		}
	}
	if n == 0 {
		t.Fatal("no corpus entry checked")
	}
	// Field errors the schema can express too.
	valid := `{"event_id":"e1","practice_id":"p1","client":{"id":"c1","email":"a@b.co","name":"A"}}`
	for name, data := range map[string]string{
		"bad id chars":        strings.Replace(valid, `"p1"`, `"p 1"`, 1),
		"missing email":       strings.Replace(valid, `"email":"a@b.co",`, ``, 1),
		"not an email":        strings.Replace(valid, `a@b.co`, `not-an-email`, 1),
		"display name email":  strings.Replace(valid, `a@b.co`, `A <a@b.co>`, 1),
		"CRLF in email":       strings.Replace(valid, `a@b.co`, `a@b.co\r\nBcc: x@evil.co`, 1),
		"CRLF in name":        strings.Replace(valid, `"A"`, `"A\r\nBcc: x@evil.co"`, 1),
		"absolute return_to":  strings.Replace(valid, `}}`, `},"return_to":"https://evil.example/"}`, 1),
		"//host return_to":    strings.Replace(valid, `}}`, `},"return_to":"//evil.example/"}`, 1),
		"backslash return_to": strings.Replace(valid, `}}`, `},"return_to":"/\\evil.example/"}`, 1),
		"version 2":           strings.Replace(valid, `{`, `{"version":2,`, 1),
		"missing event id":    strings.Replace(valid, `"event_id":"e1",`, ``, 1),
	} {
		if _, err := events.Decode(events.SubjectSigninRequested, []byte(data)); err == nil {
			t.Fatalf("%s: Decode accepts %s", name, data)
		}
		if validate(c.schema(t, events.SubjectSigninRequested+".json"), []byte(data)) == nil {
			t.Errorf("%s: the schema accepts what Decode refuses: %s", name, data)
		}
	}
}

// TestAsyncAPIMatchesSubjects: asyncapi.yaml is an AsyncAPI 3.0 document
// with one channel per action subject and per lifecycle type (address
// links.{link_id}.<type>), each channel's message payload the matching
// schema file, and no channel the code does not define.
func TestAsyncAPIMatchesSubjects(t *testing.T) {
	b, err := os.ReadFile("asyncapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		AsyncAPI string `yaml:"asyncapi"`
		Channels map[string]struct {
			Address    string                       `yaml:"address"`
			Messages   map[string]map[string]string `yaml:"messages"`
			Parameters map[string]any               `yaml:"parameters"`
		} `yaml:"channels"`
		Operations map[string]struct {
			Action  string            `yaml:"action"`
			Channel map[string]string `yaml:"channel"`
		} `yaml:"operations"`
		Components struct {
			Messages map[string]struct {
				Payload map[string]string `yaml:"payload"`
			} `yaml:"messages"`
		} `yaml:"components"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	if doc.AsyncAPI != "3.0.0" {
		t.Fatalf("asyncapi: %q, want 3.0.0", doc.AsyncAPI)
	}
	want := map[string]string{} // address -> schema file
	for _, s := range actionSubjects(t) {
		want[s] = s + ".json"
	}
	for _, typ := range lifecycleTypes(t) {
		want[events.LinkSubject("{link_id}", typ)] = "links." + typ + ".json"
	}
	seen := map[string]bool{}
	operated := map[string]bool{}
	for _, op := range doc.Operations {
		if op.Action != "send" && op.Action != "receive" {
			t.Errorf("operation action %q", op.Action)
		}
		operated[strings.TrimPrefix(op.Channel["$ref"], "#/channels/")] = true
	}
	for key, ch := range doc.Channels {
		file, ok := want[ch.Address]
		if !ok {
			t.Errorf("channel %s: address %q is no subject of package events", key, ch.Address)
			continue
		}
		seen[ch.Address] = true
		if strings.Contains(ch.Address, "{link_id}") && ch.Parameters["link_id"] == nil {
			t.Errorf("channel %s: the link_id parameter is not described", key)
		}
		if !operated[key] {
			t.Errorf("channel %s: no operation sends or receives on it", key)
		}
		if len(ch.Messages) != 1 {
			t.Errorf("channel %s: %d messages, want 1", key, len(ch.Messages))
		}
		for _, ref := range ch.Messages {
			msg, ok := doc.Components.Messages[strings.TrimPrefix(ref["$ref"], "#/components/messages/")]
			if !ok {
				t.Errorf("channel %s: message %s is not in components", key, ref["$ref"])
				continue
			}
			if got := msg.Payload["$ref"]; got != "./schema/"+file {
				t.Errorf("channel %s: payload %q, want ./schema/%s", key, got, file)
			}
		}
	}
	for addr := range want {
		if !seen[addr] {
			t.Errorf("asyncapi.yaml has no channel for %s", addr)
		}
	}
}

// TestAsyncAPIDocumentIsValid validates asyncapi.yaml against the AsyncAPI
// 3.0.0 JSON Schema of the AsyncAPI Initiative (npm @asyncapi/specs, in
// testdeps/, installed on first use).
func TestAsyncAPIDocumentIsValid(t *testing.T) {
	deps, err := npmdeps.Find("testdeps")
	if err != nil {
		t.Fatal(err)
	}
	specPath := filepath.Join(deps, "node_modules", "@asyncapi", "specs", "schemas", "3.0.0.json")
	if err := npmdeps.Install(deps, specPath); errors.Is(err, npmdeps.ErrNoNPM) {
		t.Skip(err)
	} else if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(specPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	spec, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	const id = "http://asyncapi.com/definitions/3.0.0/asyncapi.json"
	if err := c.AddResource(id, spec); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile(id)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("asyncapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	j, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	if err := validate(sch, j); err != nil {
		t.Fatalf("asyncapi.yaml is not a valid AsyncAPI 3.0.0 document: %v", err)
	}
}

// node returns the document of a schema file.
func (c *contract) node(name string) schemaNode {
	return schemaNode{doc: name, v: c.docs[name]}
}

type schemaNode struct {
	doc string
	v   map[string]any
}

// resolve follows a $ref relative to n's document.
func (c *contract) resolve(n schemaNode, ref string) (schemaNode, error) {
	file, ptr, _ := strings.Cut(ref, "#")
	if file == "" {
		file = n.doc
	}
	var cur any = c.docs[file]
	if cur == nil {
		return schemaNode{}, fmt.Errorf("$ref %q: no schema/%s", ref, file)
	}
	for _, tok := range strings.Split(strings.TrimPrefix(ptr, "/"), "/") {
		if tok == "" {
			continue
		}
		m, ok := cur.(map[string]any)
		if !ok {
			return schemaNode{}, fmt.Errorf("$ref %q does not resolve", ref)
		}
		cur = m[tok]
	}
	m, ok := cur.(map[string]any)
	if !ok {
		return schemaNode{}, fmt.Errorf("$ref %q does not resolve", ref)
	}
	return schemaNode{doc: file, v: m}, nil
}

// properties gathers the properties a schema node defines, through $ref
// and allOf, and whether it is closed (additionalProperties false).
func (c *contract) properties(t *testing.T, n schemaNode) (map[string]schemaNode, bool) {
	t.Helper()
	props := map[string]schemaNode{}
	closed := n.v["additionalProperties"] == false
	if p, ok := n.v["properties"].(map[string]any); ok {
		for k, v := range p {
			m, _ := v.(map[string]any)
			props[k] = schemaNode{doc: n.doc, v: m}
		}
	}
	var subs []schemaNode
	if ref, ok := n.v["$ref"].(string); ok {
		r, err := c.resolve(n, ref)
		if err != nil {
			t.Fatal(err)
		}
		subs = append(subs, r)
	}
	if all, ok := n.v["allOf"].([]any); ok {
		for _, s := range all {
			m, _ := s.(map[string]any)
			subs = append(subs, schemaNode{doc: n.doc, v: m})
		}
	}
	for _, s := range subs {
		p, cl := c.properties(t, s)
		closed = closed || cl
		for k, v := range p {
			if _, ok := props[k]; !ok {
				props[k] = v
			}
		}
	}
	return props, closed
}

var timeType = reflect.TypeOf(time.Time{})

// jsonFields returns a struct's JSON field names and types, with embedded
// structs' fields flattened as encoding/json does.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if f.Anonymous && tag == "" {
			for k, v := range jsonFields(f.Type) {
				out[k] = v
			}
			continue
		}
		if !f.IsExported() || tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}

// checkFields fails unless the schema node describes exactly the JSON
// fields of Go type typ, is closed, and does so recursively for every
// struct-valued field.
func (c *contract) checkFields(t *testing.T, typ reflect.Type, n schemaNode, path string) {
	t.Helper()
	props, closed := c.properties(t, n)
	if !closed {
		t.Errorf("%s: the schema does not refuse unknown fields (additionalProperties: false)", path)
	}
	fields := jsonFields(typ)
	for name, ft := range fields {
		p, ok := props[name]
		if !ok {
			t.Errorf("%s.%s (Go field of %s) is not in the schema", path, name, typ)
			continue
		}
		for ft.Kind() == reflect.Pointer || ft.Kind() == reflect.Slice {
			ft = ft.Elem()
		}
		if ft.Kind() == reflect.Struct && ft != timeType {
			c.checkFields(t, ft, p, path+"."+name)
		}
	}
	for name := range props {
		if _, ok := fields[name]; !ok {
			t.Errorf("%s.%s is in the schema but %s has no such field (Decode would refuse it)", path, name, typ)
		}
	}
}

func objectPaths(v any, prefix string) []string {
	m, ok := v.(map[string]any)
	if !ok {
		return nil
	}
	out := []string{prefix}
	for k, sub := range m {
		p := k
		if prefix != "" {
			p = prefix + "/" + k
		}
		out = append(out, objectPaths(sub, p)...)
	}
	return out
}

func objectAt(v any, path string) map[string]any {
	m := v.(map[string]any)
	if path == "" {
		return m
	}
	for _, k := range strings.Split(path, "/") {
		m = m[k].(map[string]any)
	}
	return m
}

// lowerKeys returns data with every object key in lower case.
func lowerKeys(t *testing.T, data []byte) []byte {
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	var lower func(v any) any
	lower = func(v any) any {
		switch x := v.(type) {
		case map[string]any:
			m := map[string]any{}
			for k, sub := range x {
				m[strings.ToLower(k)] = lower(sub)
			}
			return m
		case []any:
			for i := range x {
				x[i] = lower(x[i])
			}
		}
		return v
	}
	b, _ := json.Marshal(lower(v))
	return b
}

func cloneJSON(v any) any {
	b, _ := json.Marshal(v)
	var out any
	_ = json.Unmarshal(b, &out)
	return out
}

// readCorpusEntry reads a "go test fuzz v1" file of FuzzDecode: a subject
// string and a payload.
func readCorpusEntry(path string) (string, []byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", nil, err
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 3 || lines[0] != "go test fuzz v1" {
		return "", nil, errors.New("not a two-value fuzz corpus entry")
	}
	unq := func(s, pre string) (string, error) {
		s, ok := strings.CutPrefix(s, pre+"(")
		if !ok || !strings.HasSuffix(s, ")") {
			return "", fmt.Errorf("want %s(...), got %.40s", pre, s)
		}
		return strconv.Unquote(strings.TrimSuffix(s, ")"))
	}
	subject, err := unq(lines[1], "string")
	if err != nil {
		return "", nil, err
	}
	data, err := unq(lines[2], "[]byte")
	return subject, []byte(data), err
}
