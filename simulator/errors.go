package simulator

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// apiError is the body Genesys Cloud answers a failed REST call with.
type apiError struct {
	Message       string            `json:"message"`
	Code          string            `json:"code"`
	Status        int               `json:"status"`
	MessageParams map[string]string `json:"messageParams,omitempty"`
	ContextID     string            `json:"contextId"`
	Details       []any             `json:"details"`
	Errors        []any             `json:"errors"`
}

// errorCode is the Genesys "code" for a status when the caller gives none.
func errorCode(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "bad.request"
	case http.StatusUnauthorized:
		return "bad.credentials"
	case http.StatusForbidden:
		return "missing.permissions"
	case http.StatusNotFound:
		return "not.found"
	case http.StatusMethodNotAllowed:
		return "method.not.allowed"
	case http.StatusRequestTimeout:
		return "request.timeout"
	case http.StatusConflict:
		return "conflict"
	case http.StatusRequestEntityTooLarge:
		return "request.entity.too.large"
	case http.StatusUnsupportedMediaType:
		return "unsupported.media.type"
	case http.StatusTooManyRequests:
		return "too.many.requests"
	case http.StatusBadGateway:
		return "bad.gateway"
	case http.StatusServiceUnavailable:
		return "service.unavailable"
	case http.StatusGatewayTimeout:
		return "gateway.timeout"
	default:
		if status >= 500 {
			return "internal.server.error"
		}
		return "bad.request"
	}
}

func errorMessage(status int) string {
	switch status {
	case http.StatusBadRequest:
		return "The request could not be understood by the server due to malformed syntax."
	case http.StatusUnauthorized:
		return "Invalid login credentials."
	case http.StatusNotFound:
		return "The requested resource was not found."
	case http.StatusServiceUnavailable:
		return "Service Unavailable - The server is currently unavailable (because it is overloaded or down for maintenance)."
	case http.StatusGatewayTimeout:
		return "The request timed out."
	default:
		if status >= 500 {
			return "The server encountered an unexpected condition which prevented it from fulfilling the request."
		}
		return http.StatusText(status)
	}
}

// writeAPIError answers with a Genesys-style error body. The contextId is
// also sent as ININ-Correlation-ID, which the SDK copies into APIError.
func writeAPIError(w http.ResponseWriter, status int, code, msg string, params map[string]string) {
	if code == "" {
		code = errorCode(status)
	}
	if msg == "" {
		msg = errorMessage(status)
	}
	ctxID := newUUID()
	body, _ := json.Marshal(apiError{
		Message:       msg,
		Code:          code,
		Status:        status,
		MessageParams: params,
		ContextID:     ctxID,
		Details:       []any{},
		Errors:        []any{},
	})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("ININ-Correlation-ID", ctxID)
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// writeFault answers a request with an injected fault, shaped as Genesys
// shapes that status.
func writeFault(w http.ResponseWriter, r *http.Request, f *Fault) {
	if r.URL.Path == "/oauth/token" && (f.Status == http.StatusBadRequest || f.Status == http.StatusUnauthorized) {
		code := "invalid_client"
		if f.Status == http.StatusBadRequest {
			code = "invalid_request"
		}
		desc := f.Message
		if desc == "" {
			desc = "client authentication failed"
		}
		writeOAuthError(w, f.Status, code, desc)
		return
	}
	if r.Method == http.MethodHead {
		// HEAD answers carry no body; Genesys sends the status alone.
		w.WriteHeader(f.Status)
		return
	}
	switch f.Status {
	case http.StatusTooManyRequests:
		secs := int((f.RetryAfter + time.Second - 1) / time.Second)
		if secs < 1 {
			secs = 1
		}
		w.Header().Set("Retry-After", strconv.Itoa(secs))
		msg := f.Message
		if msg == "" {
			msg = fmt.Sprintf("Rate limit exceeded the maximum. Retry the request in [%d] seconds", secs)
		}
		writeAPIError(w, f.Status, "too.many.requests", msg, map[string]string{"retryAfter": strconv.Itoa(secs)})
	case http.StatusForbidden:
		perm := f.Permission
		if perm == "" {
			perm = "routing:queue:view"
		}
		msg := f.Message
		if msg == "" {
			msg = fmt.Sprintf("You are missing the following permission(s): [%s]", perm)
		}
		writeAPIError(w, f.Status, "missing.permissions", msg, map[string]string{"permissions": perm})
	case http.StatusUnauthorized:
		writeAPIError(w, f.Status, "bad.credentials", f.Message, nil)
	default:
		writeAPIError(w, f.Status, f.Code, f.Message, nil)
	}
}

func writeOAuthError(w http.ResponseWriter, status int, code, desc string) {
	body, _ := json.Marshal(map[string]string{"error": code, "description": desc, "error_description": desc})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		writeAPIError(w, http.StatusInternalServerError, "", "", nil)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("ININ-Correlation-ID", newUUID())
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
