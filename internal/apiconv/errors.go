package apiconv

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"

	"github.com/switchboard-dev/switchboard/broker"
	"github.com/switchboard-dev/switchboard/message"
)

// ErrorDomain is the domain of the google.rpc.ErrorInfo detail on every hub
// error.
const ErrorDomain = "switchboard.dev"

// Reasons carried in ErrorInfo.Reason. Clients map them back to the broker
// sentinels, so errors.Is works across the wire.
const (
	ReasonInvalid          = "INVALID"
	ReasonTooLarge         = "TOO_LARGE"
	ReasonNotSupported     = "NOT_SUPPORTED"
	ReasonClosed           = "CLOSED"
	ReasonTopicNotFound    = "TOPIC_NOT_FOUND"
	ReasonGroupNotFound    = "GROUP_NOT_FOUND"
	ReasonAlreadyExists    = "ALREADY_EXISTS"
	ReasonAlreadySettled   = "ALREADY_SETTLED"
	ReasonDeliveryExpired  = "DELIVERY_EXPIRED"
	ReasonUnknownDelivery  = "UNKNOWN_DELIVERY"
	ReasonNoResponders     = "NO_RESPONDERS"
	ReasonTimeout          = "TIMEOUT"
	ReasonStorage          = "STORAGE"
	ReasonLocked           = "LOCKED"
	ReasonUnavailable      = "UNAVAILABLE"
	ReasonShuttingDown     = "SHUTTING_DOWN"
	ReasonCanceled         = "CANCELED"
	ReasonInternal         = "INTERNAL"
	ReasonRequestTooLarge  = "REQUEST_TOO_LARGE"
	ReasonMalformedRequest = "MALFORMED_REQUEST"
	ReasonUnauthenticated  = "UNAUTHENTICATED"   // no bearer token, or an unknown one
	ReasonPermissionDenied = "PERMISSION_DENIED" // the token may not touch the topic
	ReasonRateLimited      = "RATE_LIMITED"      // the token's rate limit; retry after Retry-After
)

// classify finds the code and reason of a broker error.
func classify(err error) (connect.Code, string) {
	switch {
	case errors.Is(err, message.ErrTooLarge):
		// Not ResourceExhausted: that is 429 (retry later) in REST, and a
		// too-large message will never fit.
		return connect.CodeInvalidArgument, ReasonTooLarge
	case errors.Is(err, message.ErrInvalid):
		return connect.CodeInvalidArgument, ReasonInvalid
	case errors.Is(err, broker.ErrTopicNotFound):
		return connect.CodeNotFound, ReasonTopicNotFound
	case errors.Is(err, broker.ErrGroupNotFound):
		return connect.CodeNotFound, ReasonGroupNotFound
	case errors.Is(err, broker.ErrAlreadyExists):
		return connect.CodeAlreadyExists, ReasonAlreadyExists
	case errors.Is(err, broker.ErrAlreadySettled):
		return connect.CodeFailedPrecondition, ReasonAlreadySettled
	case errors.Is(err, broker.ErrDeliveryExpired):
		return connect.CodeFailedPrecondition, ReasonDeliveryExpired
	case errors.Is(err, broker.ErrNoResponders):
		return connect.CodeUnavailable, ReasonNoResponders
	case errors.Is(err, broker.ErrTimeout):
		return connect.CodeDeadlineExceeded, ReasonTimeout
	case errors.Is(err, broker.ErrNotSupported):
		return connect.CodeUnimplemented, ReasonNotSupported
	case errors.Is(err, broker.ErrClosed):
		return connect.CodeUnavailable, ReasonClosed
	case errors.Is(err, broker.ErrStorage):
		return connect.CodeUnavailable, ReasonStorage
	case errors.Is(err, broker.ErrLocked):
		return connect.CodeUnavailable, ReasonLocked
	case errors.Is(err, broker.ErrUnavailable):
		return connect.CodeUnavailable, ReasonUnavailable
	case errors.Is(err, context.Canceled):
		return connect.CodeCanceled, ReasonCanceled
	case errors.Is(err, context.DeadlineExceeded):
		return connect.CodeDeadlineExceeded, ReasonTimeout
	}
	return connect.CodeInternal, ReasonInternal
}

// ToConnect turns a broker error into a connect error with the matching code
// and an ErrorInfo detail. A *connect.Error passes through unchanged.
func ToConnect(err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if errors.As(err, &ce) {
		return ce
	}
	code, reason := classify(err)
	msg := err.Error()
	if reason == ReasonInternal {
		msg = "internal error: " + msg + "; try again, and see the hub log if it persists"
	}
	return NewError(code, reason, msg)
}

// NewError makes a connect error with an ErrorInfo detail.
func NewError(code connect.Code, reason, msg string) *connect.Error {
	ce := connect.NewError(code, errors.New(msg))
	if d, err := connect.NewErrorDetail(&errdetails.ErrorInfo{Reason: reason, Domain: ErrorDomain}); err == nil {
		ce.AddDetail(d)
	}
	return ce
}

// HTTPStatus is the REST status of an error, as vanguard maps codes (the
// grpc-gateway convention).
func HTTPStatus(err error) int {
	code := connect.CodeOf(ToConnect(err))
	switch code {
	case connect.CodeInvalidArgument, connect.CodeOutOfRange, connect.CodeFailedPrecondition:
		return http.StatusBadRequest
	case connect.CodeNotFound:
		return http.StatusNotFound
	case connect.CodeAlreadyExists, connect.CodeAborted:
		return http.StatusConflict
	case connect.CodeUnauthenticated:
		return http.StatusUnauthorized
	case connect.CodePermissionDenied:
		return http.StatusForbidden
	case connect.CodeResourceExhausted:
		return http.StatusTooManyRequests
	case connect.CodeUnimplemented:
		return http.StatusNotImplemented
	case connect.CodeUnavailable:
		return http.StatusServiceUnavailable
	case connect.CodeDeadlineExceeded:
		return http.StatusGatewayTimeout
	case connect.CodeCanceled:
		return 499
	}
	return http.StatusInternalServerError
}

// RemoteError is an error returned by a hub. It matches (errors.Is) the
// broker sentinel its reason names, so code written against an in-process
// backend handles a remote one the same way.
type RemoteError struct {
	Code    connect.Code
	Reason  string
	Message string
	sent    []error
}

func (e *RemoteError) Error() string { return e.Message }

// Unwrap returns the sentinels the error matches.
func (e *RemoteError) Unwrap() []error { return e.sent }

var reasonSentinels = map[string][]error{
	ReasonInvalid:         {message.ErrInvalid},
	ReasonTooLarge:        {message.ErrInvalid, message.ErrTooLarge},
	ReasonRequestTooLarge: {message.ErrInvalid, message.ErrTooLarge},
	ReasonNotSupported:    {broker.ErrNotSupported},
	ReasonClosed:          {broker.ErrClosed},
	ReasonShuttingDown:    {broker.ErrClosed},
	ReasonTopicNotFound:   {broker.ErrTopicNotFound},
	ReasonGroupNotFound:   {broker.ErrGroupNotFound},
	ReasonAlreadyExists:   {broker.ErrAlreadyExists},
	ReasonAlreadySettled:  {broker.ErrAlreadySettled},
	ReasonDeliveryExpired: {broker.ErrDeliveryExpired},
	ReasonUnknownDelivery: {broker.ErrClosed},
	ReasonNoResponders:    {broker.ErrNoResponders},
	ReasonTimeout:         {broker.ErrTimeout},
	ReasonStorage:         {broker.ErrStorage},
	ReasonLocked:          {broker.ErrLocked},
	ReasonUnavailable:     {broker.ErrUnavailable},
	ReasonCanceled:        {context.Canceled},
	// No broker sentinel (yet) for these: the RemoteError's Code and Reason
	// say what happened; listed so the code fallback below does not map
	// ResourceExhausted (429) to ErrTooLarge.
	ReasonUnauthenticated:  nil,
	ReasonPermissionDenied: nil,
	ReasonRateLimited:      nil,
}

// FromConnect turns an error of a hub call back into one that matches the
// broker sentinels. Errors without a Switchboard reason are mapped by code
// (Unavailable from the transport becomes ErrUnavailable).
func FromConnect(err error) error {
	if err == nil {
		return nil
	}
	var ce *connect.Error
	if !errors.As(err, &ce) {
		return err
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	reason := ""
	for _, d := range ce.Details() {
		v, derr := d.Value()
		if derr != nil {
			continue
		}
		if info, ok := v.(*errdetails.ErrorInfo); ok && info.GetDomain() == ErrorDomain {
			reason = info.GetReason()
			break
		}
	}
	return Remote(ce.Code(), reason, ce.Message())
}

// Remote makes the error of a code, reason and message a hub sent, e.g. in
// the per-settlement results of Settle. It matches the broker sentinel its
// reason names, as FromConnect's errors do.
func Remote(code connect.Code, reason, msg string) error {
	re := &RemoteError{Code: code, Reason: reason, Message: msg}
	if s, ok := reasonSentinels[reason]; ok {
		re.sent = s
	} else {
		switch code {
		case connect.CodeUnavailable:
			re.sent = []error{broker.ErrUnavailable}
			re.Message = fmt.Sprintf("hub unreachable: %s; is `switchboard serve` running at that address?", msg)
		case connect.CodeInvalidArgument:
			re.sent = []error{message.ErrInvalid}
		case connect.CodeNotFound:
			re.sent = nil
		case connect.CodeUnimplemented:
			re.sent = []error{broker.ErrNotSupported}
		case connect.CodeDeadlineExceeded:
			re.sent = []error{broker.ErrTimeout}
		case connect.CodeResourceExhausted:
			re.sent = []error{message.ErrTooLarge}
		}
	}
	return re
}

// Parts returns the code, reason and message of err as a hub reports it
// (ToConnect's classification): for per-item results such as Settle's.
func Parts(err error) (connect.Code, string, string) {
	ce := ToConnect(err).(*connect.Error)
	reason := ReasonInternal
	for _, d := range ce.Details() {
		v, derr := d.Value()
		if derr != nil {
			continue
		}
		if info, ok := v.(*errdetails.ErrorInfo); ok && info.GetDomain() == ErrorDomain {
			reason = info.GetReason()
			break
		}
	}
	return ce.Code(), reason, ce.Message()
}
