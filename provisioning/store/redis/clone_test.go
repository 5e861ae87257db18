package redisstore

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/dpsbroker/dpsbroker/provisioning"
)

// fill sets every field reachable from v to a non-zero value, allocating
// pointers and one-element slices, so that a clone that forgets a field
// shows up either as a difference or as shared memory.
func fill(v reflect.Value, depth int) {
	if depth > 8 {
		return
	}
	switch v.Kind() {
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem(), depth+1)
	case reflect.Struct:
		if v.Type() == reflect.TypeOf(time.Time{}) {
			v.Set(reflect.ValueOf(time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)))
			return
		}
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fill(v.Field(i), depth+1)
			}
		}
	case reflect.Slice:
		if v.Type() == reflect.TypeOf(json.RawMessage{}) {
			v.Set(reflect.ValueOf(json.RawMessage(`{"x":1}`)))
			return
		}
		v.Set(reflect.MakeSlice(v.Type(), 1, 1))
		fill(v.Index(0), depth+1)
	case reflect.Map:
		v.Set(reflect.MakeMap(v.Type()))
	case reflect.String:
		v.SetString("s")
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int64, reflect.Int32:
		v.SetInt(7)
	}
}

// shared reports a path where a and b share memory (the same pointer, or
// slices with the same backing array).
func shared(a, b reflect.Value, path string) string {
	switch a.Kind() {
	case reflect.Pointer:
		if a.IsNil() || b.IsNil() {
			return ""
		}
		if a.Pointer() == b.Pointer() {
			return path
		}
		return shared(a.Elem(), b.Elem(), path)
	case reflect.Struct:
		for i := range a.NumField() {
			if !a.Type().Field(i).IsExported() {
				continue
			}
			if p := shared(a.Field(i), b.Field(i), path+"."+a.Type().Field(i).Name); p != "" {
				return p
			}
		}
	case reflect.Slice, reflect.Map:
		if a.Len() > 0 && a.Pointer() == b.Pointer() {
			return path
		}
		if a.Kind() == reflect.Slice {
			for i := range a.Len() {
				if p := shared(a.Index(i), b.Index(i), path+"[]"); p != "" {
					return p
				}
			}
		}
	}
	return ""
}

func TestClonesShareNothing(t *testing.T) {
	cases := []struct {
		name  string
		value any
		clone func(any) any
	}{
		{"IndividualEnrollment", &provisioning.IndividualEnrollment{}, func(v any) any { return cloneEnrollment(v.(*provisioning.IndividualEnrollment)) }},
		{"EnrollmentGroup", &provisioning.EnrollmentGroup{}, func(v any) any { return cloneGroup(v.(*provisioning.EnrollmentGroup)) }},
		{"CACertificate", &provisioning.CACertificate{}, func(v any) any { return cloneCA(v.(*provisioning.CACertificate)) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fill(reflect.ValueOf(c.value).Elem(), 0)
			got := c.clone(c.value)
			if !reflect.DeepEqual(got, c.value) {
				t.Fatalf("clone differs:\n got %+v\nwant %+v", got, c.value)
			}
			if p := shared(reflect.ValueOf(got), reflect.ValueOf(c.value), c.name); p != "" {
				t.Fatalf("clone shares memory at %s", p)
			}
		})
	}
	if cloneEnrollment(nil) != nil || cloneGroup(nil) != nil || cloneCA(nil) != nil {
		t.Fatal("clone of nil is not nil")
	}
}
