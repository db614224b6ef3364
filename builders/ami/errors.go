package ami

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/smithy-go"
)

// OpError is what every AWS call of this package returns when it fails: the operation, the resource it was
// acting on and the region, around the SDK's error. Its message reads
//
//	PutSnapshotBlock snap-0123 block 42: AccessDeniedException: User is not authorized (us-east-1, request 8f1c…)
//
// and never contains a credential. Err, the SDK's error, is kept for errors.As (smithy.APIError, the
// service's typed exceptions).
type OpError struct {
	// Op is the API operation, e.g. "PutSnapshotBlock", "RegisterImage".
	Op string
	// Resource names what the operation acted on: "snap-0123 block 42", "ami-0abc", "/gpuforge/gpu-node".
	Resource string
	// Region is the AWS region the call went to.
	Region string
	// Attempts is how many times the call was sent (1 when it was not retried).
	Attempts int
	// Err is the cause.
	Err error
}

var _ error = (*OpError)(nil)

func (e *OpError) Error() string {
	var b strings.Builder
	b.WriteString(e.Op)
	if e.Resource != "" {
		b.WriteString(" " + e.Resource)
	}
	b.WriteString(": " + describe(e.Err))
	var extra []string
	if e.Region != "" {
		extra = append(extra, e.Region)
	}
	if id := requestID(e.Err); id != "" {
		extra = append(extra, "request "+id)
	}
	if e.Attempts > 1 {
		extra = append(extra, fmt.Sprintf("%d attempts", e.Attempts))
	}
	if len(extra) > 0 {
		b.WriteString(" (" + strings.Join(extra, ", ") + ")")
	}
	return b.String()
}

// Unwrap returns the cause.
func (e *OpError) Unwrap() error { return e.Err }

// Code returns the AWS error code of the cause ("AccessDeniedException", "InvalidAMIName.Duplicate"), or "".
func (e *OpError) Code() string { return errorCode(e.Err) }

// Temporary reports whether the failure was one that is retried (throttling, a server error, a dropped
// connection): trying the whole operation again later may succeed.
func (e *OpError) Temporary() bool { return retryable(e.Err) }

// describe is the cause's message without the SDK's "operation error …, https response error …" preamble,
// which repeats the operation and the endpoint.
func describe(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		if msg := ae.ErrorMessage(); msg != "" {
			return ae.ErrorCode() + ": " + msg
		}
		return ae.ErrorCode()
	}
	var oe *smithy.OperationError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err.Error()
	}
	return err.Error()
}

func requestID(err error) string {
	var r interface{ ServiceRequestID() string }
	if errors.As(err, &r) {
		return r.ServiceRequestID()
	}
	return ""
}

// errorCode returns the AWS error code of err, or "".
func errorCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// httpStatus returns the HTTP status of the response that failed err, or 0.
func httpStatus(err error) int {
	var re interface{ HTTPStatusCode() int }
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// retryableCodes are the AWS error codes that mean "slow down" or "the service failed, not your request":
// the SDK's throttle codes plus the server-side failures the services name.
var retryableCodes = func() map[string]bool {
	m := map[string]bool{
		"ConcurrentLimitExceededException": true, // EBS direct: too many concurrent calls
		"InternalServerException":          true, // EBS direct
		"InternalError":                    true, // EC2
		"InternalFailure":                  true,
		"InternalServerError":              true, // SSM
		"ServiceUnavailable":               true,
		"ServiceUnavailableException":      true,
		"Unavailable":                      true,
		"RequestTimeout":                   true,
		"RequestTimeoutException":          true,
	}
	for c := range retry.DefaultThrottleErrorCodes {
		m[c] = true
	}
	return m
}()

// throttled reports whether err is AWS asking the client to slow down.
func throttled(err error) bool {
	c := errorCode(err)
	_, ok := retry.DefaultThrottleErrorCodes[c]
	return ok || c == "ConcurrentLimitExceededException" || httpStatus(err) == 429
}

// retryable reports whether a failed call should be sent again: throttling, a 5xx response, or a connection
// that failed or was dropped. Everything else — access denied, validation and parameter errors, a resource
// that does not exist, a cancelled context — is final: retrying would only repeat it.
func retryable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) {
		return false
	}
	if code := errorCode(err); code != "" {
		if retryableCodes[code] {
			return true
		}
		if s := httpStatus(err); s >= 500 || s == 429 {
			return true
		}
		return false
	}
	if s := httpStatus(err); s != 0 {
		return s >= 500 || s == 429
	}
	if (retry.RetryableConnectionError{}).IsErrorRetryable(err) == aws.TrueTernary {
		return true
	}
	// A response cut off mid-body (a reset after the headers) surfaces as a deserialization error.
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed) {
		return true
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	return errors.Is(err, context.DeadlineExceeded) // an attempt's own time limit; the caller's is checked first
}
