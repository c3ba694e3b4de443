package api

import (
	"reflect"
	"regexp"
	"strings"
	"time"
)

// OpenAPI describes the API in OpenAPI 3. It is generated from the same
// route table that serves requests, so the description cannot fall behind
// the routes; TestOpenAPIMatchesRoutes (api_test.go) checks the document
// against the mux by sending it requests.
func (s *Server) OpenAPI() map[string]any {
	paths := map[string]map[string]any{}
	schemas := map[string]any{}
	for _, rt := range s.routes {
		op := map[string]any{
			"operationId": rt.action,
			"summary":     rt.summary,
			"description": "Roles: " + strings.Join(rt.roles.names(), ", ") + ".",
			"security":    []map[string][]string{{"bearer": {}}},
			"responses": map[string]any{
				"default": map[string]any{"description": "error", "content": jsonContent(ref("Error"))},
			},
		}
		var params []map[string]any
		for _, m := range pathParam.FindAllStringSubmatch(rt.pattern, -1) {
			params = append(params, map[string]any{"name": m[1], "in": "path", "required": true, "schema": map[string]string{"type": "string"}})
		}
		if params != nil {
			op["parameters"] = params
		}
		switch b := rt.body.(type) {
		case nil:
		case string: // a non-JSON body: an image upload, a console's keyboard, a manifest or a cable schedule
			if b == "image" || b == "console" {
				op["requestBody"] = map[string]any{"required": true, "content": map[string]any{
					"application/octet-stream": map[string]any{"schema": map[string]string{"type": "string", "format": "binary"}},
				}}
				break
			}
			if b == "cables" {
				op["requestBody"] = map[string]any{"required": true, "content": map[string]any{
					"text/csv": map[string]any{"schema": map[string]string{"type": "string"}},
				}}
				break
			}
			op["requestBody"] = map[string]any{"required": true, "content": map[string]any{
				"application/yaml": map[string]any{"schema": ref("Manifest")},
				"text/csv":         map[string]any{"schema": map[string]string{"type": "string"}},
			}}
			schemaOf(reflect.TypeOf(Manifest{}), schemas)
		default:
			op["requestBody"] = map[string]any{"required": true, "content": jsonContent(schemaOf(reflect.TypeOf(b), schemas))}
		}
		ok := map[string]any{"description": "success"}
		switch {
		case rt.reply != nil && len(rt.replies) > 0:
			// One of several replies, chosen by the request's body.
			one := []any{schemaOf(reflect.TypeOf(rt.reply), schemas)}
			for _, r := range rt.replies {
				one = append(one, schemaOf(reflect.TypeOf(r), schemas))
			}
			ok["content"] = jsonContent(map[string]any{"oneOf": one})
		case rt.reply != nil:
			ok["content"] = jsonContent(schemaOf(reflect.TypeOf(rt.reply), schemas))
		}
		op["responses"].(map[string]any)[successCode(rt)] = ok
		if paths[rt.pattern] == nil {
			paths[rt.pattern] = map[string]any{}
		}
		paths[rt.pattern][strings.ToLower(rt.method)] = op
	}
	schemaOf(reflect.TypeOf(Error{}), schemas)
	return map[string]any{
		"openapi": "3.0.3",
		"info":    map[string]string{"title": "metalhall API", "version": "v1"},
		"paths":   paths,
		"components": map[string]any{
			"schemas":         schemas,
			"securitySchemes": map[string]any{"bearer": map[string]string{"type": "http", "scheme": "bearer"}},
		},
	}
}

var pathParam = regexp.MustCompile(`\{(\w+)\}`)

func successCode(rt route) string {
	switch {
	case rt.method == "POST" && strings.HasSuffix(rt.action, ".create"), rt.action == "machine.enroll", strings.HasPrefix(rt.action, "image.import"):
		return "201"
	case rt.method == "DELETE" && rt.reply == nil:
		return "204"
	case strings.HasSuffix(rt.pattern, "/commission"), strings.HasSuffix(rt.pattern, "/provision"),
		strings.HasSuffix(rt.pattern, "/release"), strings.HasSuffix(rt.pattern, "/cancel"):
		return "202"
	}
	return "200"
}

func jsonContent(schema any) map[string]any {
	return map[string]any{"application/json": map[string]any{"schema": schema}}
}

func ref(name string) map[string]string {
	return map[string]string{"$ref": "#/components/schemas/" + name}
}

// schemaOf returns the JSON schema of t, registering named structs in
// schemas. It follows encoding/json's rules: json tags, embedded structs
// flattened, unexported fields skipped.
func schemaOf(t reflect.Type, schemas map[string]any) any {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t == reflect.TypeOf(time.Time{}):
		return map[string]string{"type": "string", "format": "date-time"}
	case t == reflect.TypeOf([]byte(nil)):
		return map[string]string{"type": "string", "format": "byte"}
	case t.Name() == "RawMessage":
		return map[string]string{"type": "object"}
	}
	switch t.Kind() {
	case reflect.String:
		return map[string]string{"type": "string"}
	case reflect.Bool:
		return map[string]string{"type": "boolean"}
	case reflect.Int, reflect.Int64, reflect.Int32, reflect.Uint, reflect.Uint64, reflect.Uint32, reflect.Uint16:
		return map[string]string{"type": "integer"}
	case reflect.Float64, reflect.Float32:
		return map[string]string{"type": "number"}
	case reflect.Slice, reflect.Array:
		return map[string]any{"type": "array", "items": schemaOf(t.Elem(), schemas)}
	case reflect.Map:
		return map[string]any{"type": "object", "additionalProperties": schemaOf(t.Elem(), schemas)}
	case reflect.Struct:
		name := t.Name()
		if _, done := schemas[name]; done && name != "" {
			return ref(name)
		}
		if name != "" {
			schemas[name] = nil // break cycles
		}
		props := map[string]any{}
		structFields(t, schemas, props)
		s := map[string]any{"type": "object", "properties": props}
		if name == "" {
			return s
		}
		schemas[name] = s
		return ref(name)
	}
	return map[string]string{}
}

func structFields(t reflect.Type, schemas map[string]any, props map[string]any) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			structFields(ft, schemas, props)
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		props[name] = schemaOf(f.Type, schemas)
	}
}
