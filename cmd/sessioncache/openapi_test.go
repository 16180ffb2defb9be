package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
	"github.com/google/go-cmp/cmp"

	"github.com/sessioncache/sessioncache/redisstore"
)

var (
	docOnce sync.Once
	doc     *openapi3.T
	docErr  error
)

// loadDoc parses and validates openapi.yaml, with the uuid and date-time
// formats checked.
func loadDoc(t *testing.T) *openapi3.T {
	t.Helper()
	docOnce.Do(func() {
		openapi3.DefineStringFormatValidator("uuid", openapi3.NewRegexpFormatValidator(openapi3.FormatOfStringForUUIDOfRFC4122))
		doc, docErr = openapi3.NewLoader().LoadFromData(openAPIDoc)
		if docErr == nil {
			docErr = doc.Validate(context.Background(), openapi3.EnableSchemaFormatValidation())
		}
		if docErr == nil {
			doc.Servers = nil // match paths whatever the test server's address
		}
	})
	if docErr != nil {
		t.Fatalf("openapi.yaml: %v", docErr)
	}
	return doc
}

// openAPICheck checks every exchange of the handler tests against the
// document: every response, and the request of every success.
type openAPICheck struct {
	errorf func(format string, args ...any)
	next   http.RoundTripper
	router routers.Router
}

func newOpenAPICheck(t *testing.T, next http.RoundTripper) http.RoundTripper {
	r, err := legacy.NewRouter(loadDoc(t))
	if err != nil {
		t.Fatal(err)
	}
	return &openAPICheck{errorf: t.Errorf, next: next, router: r}
}

func (c *openAPICheck) RoundTrip(req *http.Request) (*http.Response, error) {
	var reqBody []byte
	if req.Body != nil {
		reqBody, _ = io.ReadAll(req.Body)
		req.Body = io.NopCloser(bytes.NewReader(reqBody))
	}
	resp, err := c.next.RoundTrip(req)
	if err != nil {
		return resp, err
	}
	respBody, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(respBody))
	if err != nil {
		return resp, nil
	}
	what := req.Method + " " + req.URL.Path
	// The router matches URL.Path, where a user id's %2F is a slash: it
	// is given the escaped path, and path parameters are unescaped after.
	find := req.Clone(context.Background())
	find.URL.Path, find.URL.RawPath = req.URL.EscapedPath(), ""
	route, params, err := c.router.FindRoute(find)
	for k, v := range params {
		if u, uerr := url.PathUnescape(v); uerr == nil {
			params[k] = u
		}
	}
	if err != nil {
		if resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusMethodNotAllowed {
			c.errorf("openapi: %s answered %d but is not in the document: %v", what, resp.StatusCode, err)
		}
		return resp, nil
	}
	opts := &openapi3filter.Options{
		AuthenticationFunc:      openapi3filter.NoopAuthenticationFunc,
		IncludeResponseStatus:   true,
		SchemaValidationOptions: []openapi3.SchemaValidationOption{openapi3.EnableFormatValidation()},
	}
	in := &openapi3filter.RequestValidationInput{Request: req.Clone(context.Background()), PathParams: params, Route: route, Options: opts}
	in.Request.Body = io.NopCloser(bytes.NewReader(reqBody))
	if resp.StatusCode < 300 {
		if err := openapi3filter.ValidateRequest(context.Background(), in); err != nil {
			c.errorf("openapi: %s succeeded with a request the document refuses: %v", what, err)
		}
	}
	out := &openapi3filter.ResponseValidationInput{RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header, Options: opts}
	out.SetBodyBytes(respBody)
	if err := openapi3filter.ValidateResponse(context.Background(), out); err != nil {
		c.errorf("openapi: %s answered %d %s, which the document does not allow: %v", what, resp.StatusCode, respBody, err)
	}
	return resp, nil
}

// The document describes exactly the routes the server has, under the
// operation names used in metrics, with the query parameters each takes.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	d := loadDoc(t)
	e := newTestEnv(t)
	var want, got []string
	for _, rt := range e.srv.routes {
		query := slices.Sorted(slices.Values(rt.query))
		pattern := rt.pattern
		if !strings.Contains(pattern, " ") {
			// A route of any method (forward auth) is documented as GET:
			// OpenAPI cannot say "any method".
			pattern = "GET " + pattern
		}
		want = append(want, pattern+" "+rt.op+" query:"+strings.Join(query, ","))
	}
	for path, item := range d.Paths.Map() {
		for method, op := range item.Operations() {
			var query []string
			for _, p := range append(item.Parameters, op.Parameters...) {
				if p.Value.In == openapi3.ParameterInQuery {
					query = append(query, p.Value.Name)
				}
			}
			slices.Sort(query)
			got = append(got, method+" "+path+" "+op.OperationID+" query:"+strings.Join(query, ","))
		}
	}
	sort.Strings(want)
	sort.Strings(got)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("routes vs openapi.yaml (-server +document):\n%s", diff)
	}
}

// The document's page sizes are the library's.
func TestOpenAPIListLimit(t *testing.T) {
	op := loadDoc(t).Paths.Find("/v1/users/{user_id}/sessions").Get
	p := op.Parameters.GetByInAndName(openapi3.ParameterInQuery, "limit")
	if p == nil {
		t.Fatal("list_sessions has no limit parameter")
	}
	s := p.Schema.Value
	if s.Min == nil || *s.Min != 1 || s.Max == nil || *s.Max != redisstore.MaxListLimit {
		t.Errorf("limit: minimum %v, maximum %v; want 1 and %d", s.Min, s.Max, redisstore.MaxListLimit)
	}
	if want := fmt.Sprintf("(default %d)", redisstore.DefaultListLimit); !strings.Contains(p.Description, want) {
		t.Errorf("limit: description %q does not say %s", p.Description, want)
	}
}

func TestOpenAPIServed(t *testing.T) {
	e := newTestEnv(t)
	r := (&apiClient{t: t, base: e.metricsBase, http: e.http}).send("GET", "/openapi.yaml", "", nil)
	if r.status != http.StatusOK || r.raw != string(openAPIDoc) || !strings.HasPrefix(r.header.Get("Content-Type"), "application/yaml") {
		t.Errorf("GET /openapi.yaml: %d %s, %d bytes; want the embedded document", r.status, r.header.Get("Content-Type"), len(r.raw))
	}
}

// The checker itself catches responses the document does not allow.
func TestOpenAPICheckCatchesDrift(t *testing.T) {
	good := `"refresh_token":"x","session_id":"` + bob + `","user_id":"` + alice + `","session_expires_at":"2030-01-01T00:00:00.000Z"`
	for field, body := range map[string]string{
		"session_id": strings.Replace(`{`+good+`,"expires_at":"2030-01-01T00:00:00Z"}`, bob, "not-a-uuid", 1),
		"expires_at": `{` + good + `,"expires_at":"soon"}`,
		"extra":      `{` + good + `,"expires_at":"2030-01-01T00:00:00Z","extra":1}`,
	} {
		bad := roundTripFunc(func(*http.Request) (*http.Response, error) {
			return &http.Response{StatusCode: 201, Header: http.Header{"Content-Type": {"application/json"}},
				Body: io.NopCloser(strings.NewReader(body))}, nil
		})
		var complaints []string
		c := newOpenAPICheck(t, bad).(*openAPICheck)
		c.errorf = func(format string, args ...any) { complaints = append(complaints, fmt.Sprintf(format, args...)) }
		req, _ := http.NewRequest("POST", "http://127.0.0.1/v1/sessions", strings.NewReader(`{"client_id":"test-app","user_id":"`+alice+`"}`))
		req.Header.Set("Content-Type", "application/json")
		if _, err := c.RoundTrip(req); err != nil {
			t.Fatal(err)
		}
		if len(complaints) != 1 || !strings.Contains(complaints[0], field) {
			t.Errorf("bad %s: complaints = %q, want one naming it", field, complaints)
		}
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
