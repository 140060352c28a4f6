package call

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"connectrpc.com/connect"

	"github.com/switchboard-dev/switchboard/internal/apiconv"
)

// ErrorMapping is how one connect error code looks in each protocol. The
// table is the single source of truth: REST, GraphQL and SOAP all read it,
// and docs/calls.md prints it.
type ErrorMapping struct {
	Code connect.Code
	// HTTPStatus is the status of a REST (and Connect unary) error.
	HTTPStatus int
	// GraphQL is errors[].extensions.code.
	GraphQL string
	// SOAP11 is the SOAP 1.1 faultcode (in the soap envelope namespace);
	// the HTTP status of a SOAP 1.1 fault is always 500.
	SOAP11 string
	// SOAP12 is the SOAP 1.2 env:Code/env:Value; Sender is answered with
	// HTTP 400, Receiver with 500. The env:Subcode carries the connect code.
	SOAP12 string
}

// ErrorTable lists every connect code in code order.
var ErrorTable = []ErrorMapping{
	{connect.CodeCanceled, 499, "CANCELED", "Client", "Sender"},
	{connect.CodeUnknown, http.StatusInternalServerError, "UNKNOWN", "Server", "Receiver"},
	{connect.CodeInvalidArgument, http.StatusBadRequest, "INVALID_ARGUMENT", "Client", "Sender"},
	{connect.CodeDeadlineExceeded, http.StatusGatewayTimeout, "DEADLINE_EXCEEDED", "Server", "Receiver"},
	{connect.CodeNotFound, http.StatusNotFound, "NOT_FOUND", "Client", "Sender"},
	{connect.CodeAlreadyExists, http.StatusConflict, "ALREADY_EXISTS", "Client", "Sender"},
	{connect.CodePermissionDenied, http.StatusForbidden, "PERMISSION_DENIED", "Client", "Sender"},
	{connect.CodeResourceExhausted, http.StatusTooManyRequests, "RESOURCE_EXHAUSTED", "Server", "Receiver"},
	{connect.CodeFailedPrecondition, http.StatusBadRequest, "FAILED_PRECONDITION", "Client", "Sender"},
	{connect.CodeAborted, http.StatusConflict, "ABORTED", "Server", "Receiver"},
	{connect.CodeOutOfRange, http.StatusBadRequest, "OUT_OF_RANGE", "Client", "Sender"},
	{connect.CodeUnimplemented, http.StatusNotImplemented, "UNIMPLEMENTED", "Client", "Sender"},
	{connect.CodeInternal, http.StatusInternalServerError, "INTERNAL", "Server", "Receiver"},
	{connect.CodeUnavailable, http.StatusServiceUnavailable, "UNAVAILABLE", "Server", "Receiver"},
	{connect.CodeDataLoss, http.StatusInternalServerError, "DATA_LOSS", "Server", "Receiver"},
	{connect.CodeUnauthenticated, http.StatusUnauthorized, "UNAUTHENTICATED", "Client", "Sender"},
}

// GraphQL-only error codes (errors[].extensions.code) for requests refused
// before any method is called.
const (
	GraphQLParseFailed      = "GRAPHQL_PARSE_FAILED"
	GraphQLValidationFailed = "GRAPHQL_VALIDATION_FAILED"
	GraphQLTooDeep          = "QUERY_TOO_DEEP"
	GraphQLTooCostly        = "QUERY_TOO_COSTLY"
	GraphQLBadRequest       = "BAD_REQUEST"
)

// MappingOf returns the row of code; an unknown code maps like Unknown.
func MappingOf(code connect.Code) ErrorMapping {
	if code >= 1 && int(code) <= len(ErrorTable) {
		return ErrorTable[code-1]
	}
	return ErrorTable[connect.CodeUnknown-1]
}

// HTTPStatus is the REST status of err (see [ErrorTable]).
func HTTPStatus(err error) int { return MappingOf(CodeOf(err)).HTTPStatus }

// CodeOf is the connect code of err: its own for a *connect.Error,
// Canceled/DeadlineExceeded for context errors, Unknown otherwise.
func CodeOf(err error) connect.Code {
	var ce *connect.Error
	switch {
	case errors.As(err, &ce):
		return ce.Code()
	case errors.Is(err, context.DeadlineExceeded):
		return connect.CodeDeadlineExceeded
	case errors.Is(err, context.Canceled):
		return connect.CodeCanceled
	}
	return connect.CodeUnknown
}

// codeName is the lower-snake name connect uses on the wire
// ("invalid_argument").
func codeName(code connect.Code) string { return strings.ToLower(MappingOf(code).GraphQL) }

// messageOf is the message of err without connect's "code: " prefix.
func messageOf(err error) string {
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce.Message()
	}
	return err.Error()
}

// invalid makes an InvalidArgument error.
func invalid(format string, args ...any) *connect.Error {
	return connect.NewError(connect.CodeInvalidArgument, errorf(format, args...))
}

// bodyTooLarge is the error of a request body over WithMaxBodyBytes, in
// every protocol: ResourceExhausted (what gRPC and connect answer for a
// message over their limits) and a message naming the body's size, when it
// was declared (size >= 0), and the limit.
func bodyTooLarge(size, limit int64) *connect.Error {
	if size >= 0 {
		return tooLarge("request body of %d bytes exceeds the server's limit of %d bytes; send less per call (or raise the server's limit: call.WithMaxBodyBytes, the hub's max_request_bytes)", size, limit)
	}
	return tooLarge("request body exceeds the server's limit of %d bytes; send less per call (or raise the server's limit: call.WithMaxBodyBytes, the hub's max_request_bytes)", limit)
}

// ReasonRequestTooLarge is the google.rpc.ErrorInfo reason of a request
// refused for its size (code resource_exhausted). The client interceptor
// neither retries such a call nor counts it against the target's health:
// the same request would be refused again, and the server is fine.
const ReasonRequestTooLarge = apiconv.ReasonRequestTooLarge

// tooLarge is a resource_exhausted error with the REQUEST_TOO_LARGE reason.
func tooLarge(format string, args ...any) *connect.Error {
	return apiconv.NewError(connect.CodeResourceExhausted, ReasonRequestTooLarge, fmt.Sprintf(format, args...))
}

// isTooLarge reports an error with the REQUEST_TOO_LARGE reason.
func isTooLarge(err error) bool {
	if connect.CodeOf(err) != connect.CodeResourceExhausted {
		return false
	}
	re, ok := apiconv.FromConnect(err).(*apiconv.RemoteError)
	return ok && re.Reason == ReasonRequestTooLarge
}

// messageTooLarge is the error of a message of a client or bidi stream over
// WithMaxBodyBytes, which limits each message of such a stream.
func messageTooLarge(size, limit int64) *connect.Error {
	return tooLarge("stream message of %d bytes exceeds the server's limit of %d bytes, which applies to each message of a stream; send smaller messages (or raise the server's limit: call.WithMaxBodyBytes, the hub's max_request_bytes)", size, limit)
}
