package sqsface

import (
	"fmt"
	"net/http"
)

// apiError is an SQS error as both wire protocols report it: Shape is the
// JSON protocol's __type (the SDKs' typed error), Code the Query protocol's
// error code, which the JSON protocol also sends in x-amzn-query-error.
type apiError struct {
	Status  int
	Shape   string // e.g. "QueueDoesNotExist"
	Code    string // e.g. "AWS.SimpleQueueService.NonExistentQueue"
	Message string
	Sender  bool // Sender (client) fault, else Receiver
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

func senderErr(shape, code, format string, args ...any) *apiError {
	return &apiError{Status: http.StatusBadRequest, Shape: shape, Code: code, Message: fmt.Sprintf(format, args...), Sender: true}
}

// Errors as AWS returns them. Those without a modeled shape use the Query
// code as the JSON __type too.
func errNonExistentQueue() *apiError {
	return senderErr("QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue", "The specified queue does not exist.")
}

func errQueueNameExists(name string) *apiError {
	return senderErr("QueueNameExists", "QueueAlreadyExists", "A queue already exists with the same name and a different value for attribute(s) of %s.", name)
}

func errInvalidParameterValue(format string, args ...any) *apiError {
	return senderErr("InvalidParameterValue", "InvalidParameterValue", format, args...)
}

func errInvalidAttributeName(name string) *apiError {
	return senderErr("InvalidAttributeName", "InvalidAttributeName", "Unknown Attribute %s.", name)
}

func errInvalidAttributeValue(format string, args ...any) *apiError {
	return senderErr("InvalidAttributeValue", "InvalidAttributeValue", format, args...)
}

func errMissingParameter(name string) *apiError {
	return senderErr("MissingParameter", "MissingParameter", "The request must contain the parameter %s.", name)
}

func errReceiptHandleInvalid(handle string) *apiError {
	if len(handle) > 64 {
		handle = handle[:64] + "..."
	}
	return senderErr("ReceiptHandleIsInvalid", "ReceiptHandleIsInvalid", "The input receipt handle \"%s\" is not a valid receipt handle.", handle)
}

func errEmptyBatch() *apiError {
	return senderErr("EmptyBatchRequest", "AWS.SimpleQueueService.EmptyBatchRequest", "There should be at least one entry in the request.")
}

func errTooManyEntries(n int) *apiError {
	return senderErr("TooManyEntriesInBatchRequest", "AWS.SimpleQueueService.TooManyEntriesInBatchRequest", "Maximum number of entries per request are 10. You have sent %d.", n)
}

func errBatchIDsNotDistinct(id string) *apiError {
	return senderErr("BatchEntryIdsNotDistinct", "AWS.SimpleQueueService.BatchEntryIdsNotDistinct", "Id %s repeated.", id)
}

func errInvalidBatchEntryID(id string) *apiError {
	return senderErr("InvalidBatchEntryId", "AWS.SimpleQueueService.InvalidBatchEntryId", "A batch entry id can only contain alphanumeric characters, hyphens and underscores. It can be at most 80 letters long. Invalid id: %q.", id)
}

func errBatchRequestTooLong(n, limit int) *apiError {
	return senderErr("BatchRequestTooLong", "AWS.SimpleQueueService.BatchRequestTooLong", "Batch requests cannot be longer than %d bytes. You have sent %d bytes.", limit, n)
}

func errMessageTooLong(limit int) *apiError {
	return errInvalidParameterValue("One or more parameters are invalid. Reason: Message must be shorter than %d bytes.", limit)
}

func errInvalidMessageContents() *apiError {
	return senderErr("InvalidMessageContents", "InvalidMessageContents", "Invalid characters found. Valid unicode characters are #x9 | #xA | #xD | #x20 to #xD7FF | #xE000 to #xFFFD | #x10000 to #x10FFFF.")
}

func errInvalidAction(action string) *apiError {
	return senderErr("InvalidAction", "InvalidAction", "The action %s is not valid for this endpoint.", action)
}

func errUnknownOperation(target string) *apiError {
	// What AWS answers on the JSON protocol for a target it does not know.
	return senderErr("UnknownOperationException", "UnknownOperationException", "Unknown operation %s.", target)
}

func errUnsupportedOperation(format string, args ...any) *apiError {
	return senderErr("UnsupportedOperation", "AWS.SimpleQueueService.UnsupportedOperation", format, args...)
}

// errMalformedJSON answers a JSON body that cannot be decoded.
func errMalformedJSON(format string, args ...any) *apiError {
	return senderErr("SerializationException", "SerializationException", format, args...)
}

// errMalformedQuery answers a form body that cannot be decoded.
func errMalformedQuery(format string, args ...any) *apiError {
	return senderErr("MalformedQueryString", "MalformedQueryString", format, args...)
}

func errAuth(status int, code, format string, args ...any) *apiError {
	return &apiError{Status: status, Shape: code, Code: code, Message: fmt.Sprintf(format, args...), Sender: true}
}

func errInternal(err error) *apiError {
	return &apiError{Status: http.StatusInternalServerError, Shape: "InternalError", Code: "InternalError", Message: "We encountered an internal error. Please try again. (" + err.Error() + ")"}
}

func errUnavailable(err error) *apiError {
	return &apiError{Status: http.StatusServiceUnavailable, Shape: "ServiceUnavailable", Code: "ServiceUnavailable", Message: "The request has failed due to a temporary failure of the server. (" + err.Error() + ")"}
}

// batchFailure is one failed entry of a batch call (not an HTTP error).
type batchFailure struct {
	ID          string `json:"Id" xml:"Id"`
	SenderFault bool   `json:"SenderFault" xml:"SenderFault"`
	Code        string `json:"Code" xml:"Code"`
	Message     string `json:"Message,omitempty" xml:"Message,omitempty"`
}

func failure(id string, e *apiError) batchFailure {
	return batchFailure{ID: id, SenderFault: e.Sender, Code: e.Code, Message: e.Message}
}
