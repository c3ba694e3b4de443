package main

import (
	"encoding/json"
	"io"
	"reflect"
)

// writeJSON prints v for scripts: indented for a whole answer, one compact
// object per line (NDJSON) for a stream. Nil slices print as [] rather
// than null: a script iterating over "created" must not have to check for
// null first, and Go's encoder cannot tell "none" from "not there".
func writeJSON(w io.Writer, v any, stream bool) error {
	enc := json.NewEncoder(w)
	if !stream {
		enc.SetIndent("", "  ")
	}
	return enc.Encode(nonNilSlices(reflect.ValueOf(v)).Interface())
}

var rawMessageType = reflect.TypeOf(json.RawMessage(nil))

// nonNilSlices returns a copy of v in which every nil slice reachable
// through exported fields, pointers, maps, slices and interfaces is an
// empty one. Byte slices are left alone: JSON writes them as base64
// strings (or raw JSON), where empty and nil differ on purpose.
func nonNilSlices(v reflect.Value) reflect.Value {
	if !v.IsValid() {
		return v
	}
	t := v.Type()
	switch v.Kind() {
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 || t == rawMessageType {
			return v
		}
		if v.IsNil() {
			return reflect.MakeSlice(t, 0, 0)
		}
		out := reflect.MakeSlice(t, v.Len(), v.Len())
		for i := 0; i < v.Len(); i++ {
			out.Index(i).Set(nonNilSlices(v.Index(i)))
		}
		return out
	case reflect.Array:
		out := reflect.New(t).Elem()
		for i := 0; i < v.Len(); i++ {
			out.Index(i).Set(nonNilSlices(v.Index(i)))
		}
		return out
	case reflect.Pointer:
		if v.IsNil() {
			return v
		}
		out := reflect.New(t.Elem())
		out.Elem().Set(nonNilSlices(v.Elem()))
		return out
	case reflect.Interface:
		if v.IsNil() {
			return v
		}
		out := reflect.New(t).Elem()
		out.Set(nonNilSlices(v.Elem()))
		return out
	case reflect.Map:
		if v.IsNil() {
			return v
		}
		out := reflect.MakeMapWithSize(t, v.Len())
		for it := v.MapRange(); it.Next(); {
			out.SetMapIndex(it.Key(), nonNilSlices(it.Value()))
		}
		return out
	case reflect.Struct:
		// Copy the whole struct (unexported fields such as time.Time's
		// included), then fix the exported ones JSON writes.
		out := reflect.New(t).Elem()
		out.Set(v)
		for i := 0; i < t.NumField(); i++ {
			if t.Field(i).IsExported() {
				out.Field(i).Set(nonNilSlices(v.Field(i)))
			}
		}
		return out
	}
	return v
}
