package wire

import (
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Topics of the DPS registration API (PROTOCOL.md §2).
const (
	// ResponseFilter is the only filter a device may subscribe to. Every
	// device subscribes the same filter, so the broker writes each response
	// to the requesting connection instead of routing it through the tree.
	ResponseFilter = "$dps/registrations/res/#"
	// ResponseTopicPrefix starts every response topic (broker -> device).
	ResponseTopicPrefix = "$dps/registrations/res/"
	// RegisterTopicPrefix starts a register request (device -> broker); the
	// query string follows it.
	RegisterTopicPrefix = "$dps/registrations/PUT/iotdps-register/?"
	// PollTopicPrefix starts an operation-status poll (device -> broker).
	PollTopicPrefix = "$dps/registrations/GET/iotdps-get-operationstatus/?"
	// RequestTopicPrefix is what every device request topic starts with; a
	// broker can use it to route publishes to the DPS handler cheaply.
	RequestTopicPrefix = "$dps/registrations/"
)

// Query parameter names.
const (
	ParamRID         = "$rid"
	ParamOperationID = "operationId"
	ParamRetryAfter  = "retry-after"
)

// Limits on request topics. They bound the work per request and keep
// echoed values short; real SDKs send a UUID or a small integer as $rid and
// echo operation IDs of about 60 characters.
const (
	MaxRequestTopicLen = 1024
	MaxRIDLen          = 128
	MaxOperationIDLen  = 128
	// MaxQueryParams caps the number of query parameters so that the
	// duplicate check stays cheap.
	MaxQueryParams = 16
)

// DefaultRetryAfter is the retry hint sent on 202 and 429 responses when
// nothing else is known: real DPS sends 3 s, and 3 s passes every SDK's
// clamp (PROTOCOL.md §7).
const DefaultRetryAfter = 3

// RequestKind is the operation a device asks for.
type RequestKind uint8

// Request kinds (PROTOCOL.md §2). MQTT has no lookup or force-register
// operation.
const (
	// RequestRegister is PUT iotdps-register.
	RequestRegister RequestKind = iota + 1
	// RequestPollOperation is GET iotdps-get-operationstatus.
	RequestPollOperation
)

func (k RequestKind) String() string {
	switch k {
	case RequestRegister:
		return "register"
	case RequestPollOperation:
		return "poll-operation"
	default:
		return "unknown"
	}
}

// Request is a parsed device request topic. RID and OperationID are
// substrings of the topic, exactly as the device sent them (no
// percent-decoding), so that $rid is echoed byte for byte.
type Request struct {
	Kind RequestKind
	// RID is the $rid parameter, never empty.
	RID string
	// OperationID is set for RequestPollOperation only.
	OperationID string
}

// TopicErrorKind classifies a malformed request topic.
type TopicErrorKind uint8

// Topic error kinds.
const (
	TopicUnknownPath TopicErrorKind = iota + 1
	TopicTooLong
	TopicMissingRID
	TopicEmptyRID
	TopicBadQuery
	TopicMissingOperationID
	TopicDuplicateParam
	TopicValueTooLong
	TopicBadValue
	TopicTooManyParams
)

// TopicError reports why a request topic was refused. The broker answers
// it with 400 and ErrorCodeBadTopic.
type TopicError struct {
	Kind TopicErrorKind
	// Param names the offending query parameter, if any.
	Param string
	// Msg is a human-readable reason, safe to return to the device.
	Msg string
}

func (e *TopicError) Error() string {
	if e.Param != "" {
		return "request topic: " + e.Param + ": " + e.Msg
	}
	return "request topic: " + e.Msg
}

// ErrorCode is the DPS error code a device gets for this error.
func (e *TopicError) ErrorCode() int { return ErrorCodeBadTopic }

func topicErr(kind TopicErrorKind, param, msg string) *TopicError {
	return &TopicError{Kind: kind, Param: param, Msg: msg}
}

// ParseRequestTopic parses a device request topic: the register or poll
// path, then a query whose parameters may come in any order. $rid is
// required; operationId is required for polls and ignored for registers;
// other parameters (such as api-version) are tolerated. It does not
// allocate unless it returns an error.
func ParseRequestTopic(topic string) (Request, error) {
	var req Request
	if len(topic) > MaxRequestTopicLen {
		return req, topicErr(TopicTooLong, "", "longer than "+strconv.Itoa(MaxRequestTopicLen)+" bytes")
	}
	var query string
	switch {
	case strings.HasPrefix(topic, RegisterTopicPrefix):
		req.Kind, query = RequestRegister, topic[len(RegisterTopicPrefix):]
	case strings.HasPrefix(topic, PollTopicPrefix):
		req.Kind, query = RequestPollOperation, topic[len(PollTopicPrefix):]
	default:
		return req, topicErr(TopicUnknownPath, "", "unknown method or path; expected "+RegisterTopicPrefix+"$rid=... or "+PollTopicPrefix+"$rid=...&operationId=...")
	}

	// keys holds the parameter names seen so far, for the duplicate check;
	// a fixed array keeps the parse on the stack.
	var keys [MaxQueryParams]string
	n := 0
	haveRID, haveOp := false, false
	for query != "" {
		var pair string
		if i := strings.IndexByte(query, '&'); i >= 0 {
			pair, query = query[:i], query[i+1:]
		} else {
			pair, query = query, ""
		}
		if pair == "" {
			continue // "a=1&&b=2" and a trailing "&", as url.ParseQuery allows
		}
		eq := strings.IndexByte(pair, '=')
		if eq < 0 {
			return req, topicErr(TopicBadQuery, "", "query parameter without '='")
		}
		key, val := pair[:eq], pair[eq+1:]
		if key == "" {
			return req, topicErr(TopicBadQuery, "", "query parameter with an empty name")
		}
		if n == MaxQueryParams {
			return req, topicErr(TopicTooManyParams, "", "more than "+strconv.Itoa(MaxQueryParams)+" query parameters")
		}
		for _, k := range keys[:n] {
			if k == key {
				return req, topicErr(TopicDuplicateParam, key, "parameter given twice")
			}
		}
		keys[n] = key
		n++
		switch key {
		case ParamRID:
			if err := checkValue(ParamRID, val, MaxRIDLen); err != nil {
				if val == "" {
					err.Kind = TopicEmptyRID
				}
				return req, err
			}
			req.RID, haveRID = val, true
		case ParamOperationID:
			if req.Kind != RequestPollOperation {
				continue // meaningless on a register; tolerated like any extra
			}
			if err := checkValue(ParamOperationID, val, MaxOperationIDLen); err != nil {
				if val == "" {
					err.Kind = TopicMissingOperationID
				}
				return req, err
			}
			req.OperationID, haveOp = val, true
		}
	}
	if !haveRID {
		return req, topicErr(TopicMissingRID, ParamRID, "missing; every request needs a $rid")
	}
	if req.Kind == RequestPollOperation && !haveOp {
		return req, topicErr(TopicMissingOperationID, ParamOperationID, "missing; a status poll needs the operationId of a register response")
	}
	return req, nil
}

// checkValue accepts values that can be echoed into a response topic and
// read back by every SDK parser: non-empty, bounded, valid UTF-8, and free
// of control characters, MQTT wildcards, '=' (the C SDK scans for
// "retry-after=") and '$' (Python splits the response topic on '$').
func checkValue(param, v string, limit int) *TopicError {
	if v == "" {
		return topicErr(TopicBadValue, param, "empty value")
	}
	if len(v) > limit {
		return topicErr(TopicValueTooLong, param, "longer than "+strconv.Itoa(limit)+" bytes")
	}
	for i := 0; i < len(v); i++ {
		switch c := v[i]; {
		case c < 0x20 || c == 0x7f:
			return topicErr(TopicBadValue, param, "control character in value")
		case c == '#' || c == '+' || c == '=' || c == '$':
			return topicErr(TopicBadValue, param, "character "+strconv.QuoteRune(rune(c))+" not allowed in value")
		}
	}
	if !utf8.ValidString(v) {
		return topicErr(TopicBadValue, param, "value is not valid UTF-8")
	}
	return nil
}

// AppendResponseTopic appends the canonical response topic to dst:
// "$dps/registrations/res/<status>/?$rid=<rid>", plus "&retry-after=<s>"
// when retryAfter > 0. $rid comes first because the C# and Python parsers
// require it. status must be a three-digit HTTP status and rid a value
// returned by ParseRequestTopic; both are the caller's duty. With a
// large-enough dst it does not allocate.
func AppendResponseTopic(dst []byte, status int, rid string, retryAfter int) []byte {
	dst = append(dst, ResponseTopicPrefix...)
	dst = strconv.AppendInt(dst, int64(status), 10)
	dst = append(dst, "/?$rid="...)
	dst = append(dst, rid...)
	if retryAfter > 0 {
		dst = append(dst, "&retry-after="...)
		dst = strconv.AppendInt(dst, int64(retryAfter), 10)
	}
	return dst
}

// ResponseTopic is AppendResponseTopic returning a string.
func ResponseTopic(status int, rid string, retryAfter int) string {
	var buf [128]byte
	return string(AppendResponseTopic(buf[:0], status, rid, retryAfter))
}

// AppendRegisterTopic appends a register request topic (device side).
func AppendRegisterTopic(dst []byte, rid string) []byte {
	dst = append(dst, RegisterTopicPrefix...)
	dst = append(dst, "$rid="...)
	return append(dst, rid...)
}

// AppendPollTopic appends an operation-status poll topic (device side).
func AppendPollTopic(dst []byte, rid, operationID string) []byte {
	dst = append(dst, PollTopicPrefix...)
	dst = append(dst, "$rid="...)
	dst = append(dst, rid...)
	dst = append(dst, "&operationId="...)
	return append(dst, operationID...)
}

// ResponseTopicError reports a response topic a device client cannot read.
type ResponseTopicError struct {
	Msg string
}

func (e *ResponseTopicError) Error() string { return "response topic: " + e.Msg }

// ParseResponseTopic reads a response topic on the device side. It is as
// tolerant as the SDKs: parameters in any order, a missing $rid gives an
// empty rid (C, embedded C and Java never look at it), the retry-after key
// is matched ignoring case (as C#), and a missing "/" before "?" is
// accepted. retryAfter is 0 when absent.
func ParseResponseTopic(topic string) (status int, rid string, retryAfter time.Duration, err error) {
	rest, ok := strings.CutPrefix(topic, ResponseTopicPrefix)
	if !ok {
		return 0, "", 0, &ResponseTopicError{Msg: "does not start with " + ResponseTopicPrefix}
	}
	i := 0
	for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
		i++
	}
	if i == 0 || i > 3 {
		return 0, "", 0, &ResponseTopicError{Msg: "no three-digit status after " + ResponseTopicPrefix}
	}
	status, _ = strconv.Atoi(rest[:i])
	if status < 100 {
		return 0, "", 0, &ResponseTopicError{Msg: "status " + rest[:i] + " is not an HTTP status"}
	}
	rest = rest[i:]
	rest = strings.TrimPrefix(rest, "/")
	if rest == "" {
		return status, "", 0, nil
	}
	query, ok := strings.CutPrefix(rest, "?")
	if !ok {
		return 0, "", 0, &ResponseTopicError{Msg: "unexpected text after the status"}
	}
	haveRID := false
	for query != "" {
		var pair string
		if j := strings.IndexByte(query, '&'); j >= 0 {
			pair, query = query[:j], query[j+1:]
		} else {
			pair, query = query, ""
		}
		key, val, _ := strings.Cut(pair, "=")
		switch {
		case key == ParamRID:
			if haveRID {
				return 0, "", 0, &ResponseTopicError{Msg: "$rid given twice"}
			}
			rid, haveRID = val, true
		case strings.EqualFold(key, ParamRetryAfter):
			s, perr := strconv.ParseUint(val, 10, 31)
			if perr != nil {
				return 0, "", 0, &ResponseTopicError{Msg: "retry-after is not a number of seconds"}
			}
			retryAfter = time.Duration(s) * time.Second
		}
	}
	return status, rid, retryAfter, nil
}
