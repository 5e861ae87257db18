package wire

import (
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestParseRequestTopic(t *testing.T) {
	tests := []struct {
		name  string
		topic string
		want  Request
	}{
		{"C int rid", "$dps/registrations/PUT/iotdps-register/?$rid=17", Request{RequestRegister, "17", ""}},
		{"embedded C rid 1", "$dps/registrations/PUT/iotdps-register/?$rid=1", Request{RequestRegister, "1", ""}},
		{"Node uuid", "$dps/registrations/PUT/iotdps-register/?$rid=0b0e4b6c-7f0c-4a59-9a0b-2c5e1f1f7a11", Request{RequestRegister, "0b0e4b6c-7f0c-4a59-9a0b-2c5e1f1f7a11", ""}},
		{"register with extra params", "$dps/registrations/PUT/iotdps-register/?api-version=2019-03-31&$rid=a1", Request{RequestRegister, "a1", ""}},
		{"register ignores operationId", "$dps/registrations/PUT/iotdps-register/?$rid=a1&operationId=", Request{RequestRegister, "a1", ""}},
		{"poll", "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId=4.d0a671905ea5b2c8.e7173b7b-1f2a", Request{RequestPollOperation, "2", "4.d0a671905ea5b2c8.e7173b7b-1f2a"}},
		{"poll reversed", "$dps/registrations/GET/iotdps-get-operationstatus/?operationId=op1&$rid=r2", Request{RequestPollOperation, "r2", "op1"}},
		{"poll with api-version", "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=3&operationId=op&api-version=2021-06-01", Request{RequestPollOperation, "3", "op"}},
		{"empty segments tolerated", "$dps/registrations/PUT/iotdps-register/?&$rid=5&", Request{RequestRegister, "5", ""}},
		{"percent kept raw", "$dps/registrations/PUT/iotdps-register/?$rid=a%20b", Request{RequestRegister, "a%20b", ""}},
		{"utf8 rid", "$dps/registrations/PUT/iotdps-register/?$rid=é1", Request{RequestRegister, "é1", ""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRequestTopic(tt.topic)
			if err != nil {
				t.Fatalf("ParseRequestTopic(%q): %v", tt.topic, err)
			}
			if got != tt.want {
				t.Fatalf("ParseRequestTopic(%q) = %+v, want %+v", tt.topic, got, tt.want)
			}
			if !strings.Contains(tt.topic, "$rid="+got.RID) {
				t.Fatalf("RID %q is not the topic's bytes", got.RID)
			}
		})
	}
}

func TestParseRequestTopicErrors(t *testing.T) {
	const reg = "$dps/registrations/PUT/iotdps-register/?"
	const poll = "$dps/registrations/GET/iotdps-get-operationstatus/?"
	tests := []struct {
		name  string
		topic string
		kind  TopicErrorKind
		param string
	}{
		{"unknown method", "$dps/registrations/POST/iotdps-register/?$rid=1", TopicUnknownPath, ""},
		{"unknown path", "$dps/registrations/GET/iotdps-get-registration/?$rid=1", TopicUnknownPath, ""},
		{"response topic", "$dps/registrations/res/200/?$rid=1", TopicUnknownPath, ""},
		{"no slash before ?", "$dps/registrations/PUT/iotdps-register?$rid=1", TopicUnknownPath, ""},
		{"lower-case method", "$dps/registrations/put/iotdps-register/?$rid=1", TopicUnknownPath, ""},
		{"no query", "$dps/registrations/PUT/iotdps-register/", TopicUnknownPath, ""},
		{"empty query", reg, TopicMissingRID, "$rid"},
		{"missing rid", reg + "api-version=1", TopicMissingRID, "$rid"},
		{"rid case", reg + "$RID=1", TopicMissingRID, "$rid"},
		{"empty rid", reg + "$rid=", TopicEmptyRID, "$rid"},
		{"pair without =", reg + "$rid", TopicBadQuery, ""},
		{"empty key", reg + "$rid=1&=x", TopicBadQuery, ""},
		{"duplicate rid", reg + "$rid=1&$rid=2", TopicDuplicateParam, "$rid"},
		{"duplicate extra", reg + "$rid=1&a=1&a=2", TopicDuplicateParam, "a"},
		{"duplicate operationId", poll + "$rid=1&operationId=a&operationId=b", TopicDuplicateParam, "operationId"},
		{"poll without operationId", poll + "$rid=1", TopicMissingOperationID, "operationId"},
		{"poll empty operationId", poll + "$rid=1&operationId=", TopicMissingOperationID, "operationId"},
		{"long rid", reg + "$rid=" + strings.Repeat("a", MaxRIDLen+1), TopicValueTooLong, "$rid"},
		{"long operationId", poll + "$rid=1&operationId=" + strings.Repeat("a", MaxOperationIDLen+1), TopicValueTooLong, "operationId"},
		{"rid with =", reg + "$rid=a=b", TopicBadValue, "$rid"},
		{"rid with $", reg + "$rid=a$b", TopicBadValue, "$rid"},
		{"rid with +", reg + "$rid=a+b", TopicBadValue, "$rid"},
		{"rid with control", reg + "$rid=a\x00b", TopicBadValue, "$rid"},
		{"rid bad utf8", reg + "$rid=a\xffb", TopicBadValue, "$rid"},
		{"too many params", reg + "$rid=1" + manyParams(MaxQueryParams), TopicTooManyParams, ""},
		{"topic too long", reg + "$rid=1&x=" + strings.Repeat("a", MaxRequestTopicLen), TopicTooLong, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseRequestTopic(tt.topic)
			var te *TopicError
			if !errors.As(err, &te) {
				t.Fatalf("ParseRequestTopic(%q) error = %v, want *TopicError", tt.topic, err)
			}
			if te.Kind != tt.kind || te.Param != tt.param {
				t.Fatalf("ParseRequestTopic(%q) = kind %d param %q (%v), want kind %d param %q", tt.topic, te.Kind, te.Param, err, tt.kind, tt.param)
			}
			if te.ErrorCode() != ErrorCodeBadTopic || te.Msg == "" {
				t.Fatalf("error %v: code %d", err, te.ErrorCode())
			}
		})
	}
}

func manyParams(n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		b.WriteString("&p")
		b.WriteString(string(rune('a' + i)))
		b.WriteString("=1")
	}
	return b.String()
}

func TestAppendResponseTopic(t *testing.T) {
	tests := []struct {
		status, retry int
		rid, want     string
	}{
		{202, 3, "1", "$dps/registrations/res/202/?$rid=1&retry-after=3"},
		{200, 0, "0b0e4b6c-7f0c", "$dps/registrations/res/200/?$rid=0b0e4b6c-7f0c"},
		{429, 10, "42", "$dps/registrations/res/429/?$rid=42&retry-after=10"},
		{401, 0, "x", "$dps/registrations/res/401/?$rid=x"},
		{200, -1, "x", "$dps/registrations/res/200/?$rid=x"},
	}
	// The C# v1 parser: $rid must be first and the status is what precedes "/?".
	csharp := regexp.MustCompile(`^\$dps/registrations/res/(.*?)/\?\$rid=(.*?)$`)
	for _, tt := range tests {
		got := string(AppendResponseTopic(nil, tt.status, tt.rid, tt.retry))
		if got != tt.want {
			t.Errorf("AppendResponseTopic(%d, %q, %d) = %q, want %q", tt.status, tt.rid, tt.retry, got, tt.want)
		}
		if s := ResponseTopic(tt.status, tt.rid, tt.retry); s != got {
			t.Errorf("ResponseTopic = %q, want %q", s, got)
		}
		if !csharp.MatchString(got) {
			t.Errorf("%q does not match the C# v1 regex", got)
		}
		// Python: split on "$", then rid is the third part up to "&".
		if parts := strings.Split(got, "$"); len(parts) != 3 || !strings.HasPrefix(parts[2], "rid="+tt.rid) {
			t.Errorf("%q does not split like the Python SDK expects: %q", got, parts)
		}
	}
}

func TestClientTopicsRoundTrip(t *testing.T) {
	req, err := ParseRequestTopic(string(AppendRegisterTopic(nil, "r1")))
	if err != nil || req != (Request{RequestRegister, "r1", ""}) {
		t.Fatalf("register topic: %+v, %v", req, err)
	}
	req, err = ParseRequestTopic(string(AppendPollTopic(nil, "r2", "op.1")))
	if err != nil || req != (Request{RequestPollOperation, "r2", "op.1"}) {
		t.Fatalf("poll topic: %+v, %v", req, err)
	}
}

func TestParseResponseTopic(t *testing.T) {
	tests := []struct {
		topic  string
		status int
		rid    string
		retry  time.Duration
	}{
		{"$dps/registrations/res/202/?$rid=1&retry-after=3", 202, "1", 3 * time.Second},
		{"$dps/registrations/res/200/?$rid=abc", 200, "abc", 0},
		{"$dps/registrations/res/429/?retry-after=7&$rid=r", 429, "r", 7 * time.Second},
		{"$dps/registrations/res/202/?$rid=1&Retry-After=2", 202, "1", 2 * time.Second},
		{"$dps/registrations/res/401/?$rid=1&x=y", 401, "1", 0},
		{"$dps/registrations/res/200?$rid=1", 200, "1", 0},
		{"$dps/registrations/res/500/", 500, "", 0},
		{"$dps/registrations/res/500", 500, "", 0},
	}
	for _, tt := range tests {
		status, rid, retry, err := ParseResponseTopic(tt.topic)
		if err != nil || status != tt.status || rid != tt.rid || retry != tt.retry {
			t.Errorf("ParseResponseTopic(%q) = %d, %q, %v, %v; want %d, %q, %v", tt.topic, status, rid, retry, err, tt.status, tt.rid, tt.retry)
		}
	}
	for _, bad := range []string{
		"$dps/registrations/PUT/iotdps-register/?$rid=1",
		"$dps/registrations/res/",
		"$dps/registrations/res/abc/?$rid=1",
		"$dps/registrations/res/2000/?$rid=1",
		"$dps/registrations/res/099/?$rid=1",
		"$dps/registrations/res/200x",
		"$dps/registrations/res/202/?$rid=1&retry-after=-1",
		"$dps/registrations/res/202/?$rid=1&retry-after=soon",
		"$dps/registrations/res/202/?$rid=1&$rid=2",
	} {
		if _, _, _, err := ParseResponseTopic(bad); err == nil {
			t.Errorf("ParseResponseTopic(%q) succeeded", bad)
		} else if _, ok := errors.AsType[*ResponseTopicError](err); !ok {
			t.Errorf("ParseResponseTopic(%q) error %T, want *ResponseTopicError", bad, err)
		}
	}
}

func TestHotPathAllocs(t *testing.T) {
	topic := "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=0b0e4b6c-7f0c-4a59-9a0b-2c5e1f1f7a11&operationId=4.d0a671905ea5b2c8.e7173b7b&api-version=2019-03-31"
	if n := testing.AllocsPerRun(100, func() { _, _ = ParseRequestTopic(topic) }); n != 0 {
		t.Errorf("ParseRequestTopic allocates %v times", n)
	}
	buf := make([]byte, 0, 128)
	if n := testing.AllocsPerRun(100, func() { buf = AppendResponseTopic(buf[:0], 202, "0b0e4b6c-7f0c-4a59-9a0b-2c5e1f1f7a11", 3) }); n != 0 {
		t.Errorf("AppendResponseTopic allocates %v times", n)
	}
}

func BenchmarkParseRequestTopic(b *testing.B) {
	topic := "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=0b0e4b6c-7f0c-4a59-9a0b-2c5e1f1f7a11&operationId=4.d0a671905ea5b2c8.e7173b7b"
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseRequestTopic(topic); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkAppendResponseTopic(b *testing.B) {
	buf := make([]byte, 0, 128)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendResponseTopic(buf[:0], 202, "0b0e4b6c-7f0c-4a59-9a0b-2c5e1f1f7a11", 3)
	}
}

func FuzzParseRequestTopic(f *testing.F) {
	for _, s := range []string{
		"$dps/registrations/PUT/iotdps-register/?$rid=1",
		"$dps/registrations/GET/iotdps-get-operationstatus/?$rid=2&operationId=op",
		"$dps/registrations/GET/iotdps-get-operationstatus/?operationId=op&$rid=2&api-version=x",
		"$dps/registrations/PUT/iotdps-register/?$rid=1&$rid=2",
		"$dps/registrations/PUT/iotdps-register/?&&=",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		req, err := ParseRequestTopic(topic)
		if err != nil {
			if _, ok := errors.AsType[*TopicError](err); !ok {
				t.Fatalf("error of type %T", err)
			}
			return
		}
		if req.RID == "" || !strings.Contains(topic, req.RID) {
			t.Fatalf("RID %q not from topic %q", req.RID, topic)
		}
		if (req.Kind == RequestPollOperation) != (req.OperationID != "") {
			t.Fatalf("kind %v with operationId %q", req.Kind, req.OperationID)
		}
		// Whatever we accept must come back intact through every response
		// topic we send, as read by our own client parser.
		for _, retry := range []int{0, 3} {
			rt := ResponseTopic(202, req.RID, retry)
			_, rid, ra, err := ParseResponseTopic(rt)
			if err != nil || rid != req.RID || ra != time.Duration(retry)*time.Second {
				t.Fatalf("response topic %q read back as %q, %v, %v", rt, rid, ra, err)
			}
		}
		// And the canonical request rebuilt from it parses the same.
		var canon []byte
		if req.Kind == RequestRegister {
			canon = AppendRegisterTopic(nil, req.RID)
		} else {
			canon = AppendPollTopic(nil, req.RID, req.OperationID)
		}
		if got, err := ParseRequestTopic(string(canon)); err != nil || got != req {
			t.Fatalf("canonical %q parsed as %+v, %v; want %+v", canon, got, err, req)
		}
	})
}
