package httpapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
)

// apiError is an error answered as OpenAI's error JSON with an HTTP status.
type apiError struct {
	Status  int
	Message string
	Type    string // invalid_request_error, authentication_error, server_error, ...
	Param   string // the request field at fault, "" for none
	Code    string // a machine-readable code, "" for none
	// RetryAfter, when > 0, is sent as the Retry-After header (seconds).
	RetryAfter int
}

// Error is the message.
func (e *apiError) Error() string { return e.Message }

// body is the JSON shape of an apiError.
func (e *apiError) body() any {
	var param, code any
	if e.Param != "" {
		param = e.Param
	}
	if e.Code != "" {
		code = e.Code
	}
	return map[string]any{"error": map[string]any{"message": e.Message, "type": e.Type, "param": param, "code": code}}
}

// badRequest is a 400 invalid_request_error naming param.
func badRequest(param, format string, args ...any) *apiError {
	return &apiError{Status: http.StatusBadRequest, Type: "invalid_request_error", Param: param, Message: fmt.Sprintf(format, args...)}
}

// wrongType is the 400 for a field of the wrong JSON type, worded as OpenAI words it.
func wrongType(param, want string, raw json.RawMessage) *apiError {
	e := badRequest(param, "Invalid type for '%s': expected %s, but got %s instead.", param, want, jsonKind(raw))
	e.Code = "invalid_type"
	return e
}

// jsonKind names the JSON type of raw ("a string", "an array", ...).
func jsonKind(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '"':
		return "a string"
	case '[':
		return "an array"
	case '{':
		return "an object"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	if bytes.ContainsAny(raw, ".eE") {
		return "a decimal"
	}
	return "an integer"
}

// fields is a request body: its top-level members, undecoded. Unknown members are ignored.
type fields map[string]json.RawMessage

// parseBody decodes a request body that must be one JSON object.
func parseBody(data []byte) (fields, *apiError) {
	var f fields
	if err := json.Unmarshal(data, &f); err != nil || f == nil {
		msg := "the request body is not valid JSON"
		if err != nil {
			msg += ": " + err.Error()
		} else {
			msg = "the request body must be a JSON object"
		}
		return nil, badRequest("", "%s", msg)
	}
	return f, nil
}

// has reports whether name is present and not null.
func (f fields) has(name string) bool {
	raw, ok := f[name]
	return ok && !bytes.Equal(bytes.TrimSpace(raw), []byte("null"))
}

// str reads a string field; absent or null gives def.
func (f fields) str(name, def string) (string, *apiError) {
	if !f.has(name) {
		return def, nil
	}
	var s string
	if err := json.Unmarshal(f[name], &s); err != nil {
		return "", wrongType(name, "a string", f[name])
	}
	return s, nil
}

// boolean reads a boolean field; absent or null gives def.
func (f fields) boolean(name string, def bool) (bool, *apiError) {
	if !f.has(name) {
		return def, nil
	}
	var b bool
	if err := json.Unmarshal(f[name], &b); err != nil {
		return false, wrongType(name, "a boolean", f[name])
	}
	return b, nil
}

// number reads a finite number field; absent or null gives def.
func (f fields) number(name string, def float64) (float64, *apiError) {
	if !f.has(name) {
		return def, nil
	}
	var v float64
	if err := json.Unmarshal(f[name], &v); err != nil || math.IsInf(v, 0) {
		return 0, wrongType(name, "a number", f[name])
	}
	return v, nil
}

// integer reads an integer field (a number with no fractional part); absent or null gives def.
func (f fields) integer(name string, def int64) (int64, *apiError) {
	if !f.has(name) {
		return def, nil
	}
	var v json.Number
	if raw := bytes.TrimSpace(f[name]); len(raw) > 0 && raw[0] == '"' {
		return 0, wrongType(name, "an integer", f[name]) // json.Number would take "12"
	}
	d := json.NewDecoder(bytes.NewReader(f[name]))
	d.UseNumber()
	if err := d.Decode(&v); err != nil {
		return 0, wrongType(name, "an integer", f[name])
	}
	i, err := v.Int64()
	if err != nil {
		x, ferr := v.Float64()
		if ferr != nil || x != math.Trunc(x) || math.Abs(x) > 1<<62 {
			return 0, wrongType(name, "an integer", f[name])
		}
		i = int64(x)
	}
	return i, nil
}

// object reads an object field; absent or null gives nil.
func (f fields) object(name string) (fields, *apiError) {
	if !f.has(name) {
		return nil, nil
	}
	var o fields
	if err := json.Unmarshal(f[name], &o); err != nil {
		return nil, wrongType(name, "an object", f[name])
	}
	return o, nil
}

// stops reads `stop`: a string or an array of strings; absent or null gives none.
func (f fields) stops(name string) ([]string, *apiError) {
	if !f.has(name) {
		return nil, nil
	}
	var one string
	if json.Unmarshal(f[name], &one) == nil {
		return []string{one}, nil
	}
	var list []string
	if err := json.Unmarshal(f[name], &list); err != nil {
		return nil, wrongType(name, "a string or an array of strings", f[name])
	}
	return list, nil
}

// loras reads llama-server's per-request `lora` field, [{"id": N, "scale": S}, ...], into one
// scale per loaded adapter (defaults: their count and load-time scales): adapters the list does
// not name get 0, as llama-server does; absent or null keeps defaults. Errors name the field:
// not an array of objects, an id outside [0, adapters) or given twice, a non-finite scale.
func (f fields) loras(name string, defaults []float32) ([]float32, *apiError) {
	if !f.has(name) {
		return nil, nil
	}
	var list []fields
	if err := json.Unmarshal(f[name], &list); err != nil {
		return nil, wrongType(name, `an array of {"id", "scale"} objects`, f[name])
	}
	scales := make([]float32, len(defaults))
	seen := make([]bool, len(defaults))
	for i, item := range list {
		param := fmt.Sprintf("%s[%d]", name, i)
		id, e := item.integer("id", -1)
		if e != nil {
			e.Param = param + ".id"
			return nil, e
		}
		if id < 0 || id >= int64(len(defaults)) {
			return nil, badRequest(param+".id", "%s.id = %d: %d LoRA adapters are loaded (ids 0 to %d)", param, id, len(defaults), len(defaults)-1)
		}
		if seen[id] {
			return nil, badRequest(param+".id", "%s.id = %d: adapter %d is named twice", param, id, id)
		}
		seen[id] = true
		s, e := item.number("scale", 1)
		if e != nil {
			e.Param = param + ".scale"
			return nil, e
		}
		if math.IsNaN(s) || math.IsInf(s, 0) || math.Abs(s) > math.MaxFloat32 {
			return nil, badRequest(param+".scale", "%s.scale = %v: must be a finite number", param, s)
		}
		scales[id] = float32(s)
	}
	return scales, nil
}
