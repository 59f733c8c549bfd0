package s3fetch

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"
	"github.com/containerd/errdefs"
)

// Kinds of failure, matched with errors.Is. Each wraps the errdefs kind that
// containerd callers already switch on.
var (
	ErrAccessDenied    = fmt.Errorf("S3 access denied: %w", errdefs.ErrPermissionDenied)
	ErrNoSuchBucket    = fmt.Errorf("no such bucket: %w", errdefs.ErrNotFound)
	ErrNoSuchKey       = fmt.Errorf("no such key: %w", errdefs.ErrNotFound)
	ErrObjectChanged   = fmt.Errorf("object changed during download: %w", errdefs.ErrFailedPrecondition)
	ErrDownloadTimeout = fmt.Errorf("download timeout: %w", context.DeadlineExceeded)
	ErrCorrupt         = fmt.Errorf("inconsistent response: %w", errdefs.ErrDataLoss)
	// ErrNoBucket: [s3] bucket is empty (the default), and the operation
	// needs one.
	ErrNoBucket      error = &kindError{"no S3 bucket configured: set [s3] bucket in the config file (docs/CONFIG.md#s3)", errdefs.ErrFailedPrecondition}
	ErrNoCredentials       = fmt.Errorf("no AWS credentials: %w", errdefs.ErrPermissionDenied)
)

// kindError is a message that matches an errdefs kind without printing
// the kind's own text after it.
type kindError struct {
	msg  string
	kind error
}

func (e *kindError) Error() string { return e.msg }
func (e *kindError) Unwrap() error { return e.kind }

// noCredentialsHint is what an operator does about ErrNoCredentials.
const noCredentialsHint = "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in the environment of " +
	"the daemon and the commands (under systemd: an EnvironmentFile=, docs/QUICKSTART.md#4-s3-credentials), " +
	"or give the host an instance role; see docs/CONFIG.md#s3"

// credentialsError marks a failure of the SDK's credential chain, so
// translate can say what to set instead of the chain's own text.
type credentialsError struct{ err error }

func (e *credentialsError) Error() string { return "no AWS credentials found: " + e.err.Error() }
func (e *credentialsError) Unwrap() error { return e.err }

// Error is a failed S3 operation on one object. Its message names the bucket
// and key; errors.Is matches Kind (one of the Err* values above, when known)
// and the underlying SDK or network error.
type Error struct {
	Op     string // "GetObject", "HeadObject", ...
	Bucket string
	Key    string
	Kind   error
	Msg    string
	Err    error
}

func (e *Error) Error() string {
	if e.Err == nil || e.Kind != nil {
		return e.Msg
	}
	return e.Msg + ": " + e.Err.Error()
}

func (e *Error) Unwrap() []error {
	var errs []error
	if e.Kind != nil {
		errs = append(errs, e.Kind)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

func objectURL(bucket, key string) string { return "s3://" + bucket + "/" + key }

// translate turns an SDK error into an *Error naming bucket and key. ctx
// errors pass through unchanged so callers can still compare with
// context.Canceled.
func translate(op, bucket, key string, err error) error {
	if err == nil {
		return nil
	}
	var already *Error
	if errors.As(err, &already) {
		return err
	}
	if errors.Is(err, context.Canceled) {
		return err
	}
	e := &Error{Op: op, Bucket: bucket, Key: key, Err: err}
	code, status := apiCode(err), httpStatus(err)
	var ce *credentialsError
	switch {
	case errors.As(err, &ce):
		e.Kind, e.Msg = ErrNoCredentials, fmt.Sprintf("no AWS credentials for %s: %s", objectURL(bucket, key), noCredentialsHint)
	case code == "NoSuchBucket":
		e.Kind, e.Msg = ErrNoSuchBucket, fmt.Sprintf("no such bucket '%s'", bucket)
	case code == "NoSuchKey" || code == "NotFound" || status == http.StatusNotFound:
		// HeadObject has no body, so a missing bucket also arrives as a bare
		// 404 and is reported as a missing key.
		e.Kind, e.Msg = ErrNoSuchKey, "no such key: "+objectURL(bucket, key)
	case code == "AccessDenied" || code == "Forbidden" || status == http.StatusForbidden:
		e.Kind, e.Msg = ErrAccessDenied, fmt.Sprintf("S3 access denied for bucket '%s' key '%s'", bucket, key)
	case code == "PreconditionFailed" || status == http.StatusPreconditionFailed:
		e.Kind, e.Msg = ErrObjectChanged, fmt.Sprintf("object %s changed during download (If-Match failed); refusing to mix versions", objectURL(bucket, key))
	default:
		e.Msg = fmt.Sprintf("S3 %s %s", op, objectURL(bucket, key))
	}
	return e
}

func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func httpStatus(err error) int {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return re.HTTPStatusCode()
	}
	return 0
}

// retryable reports whether a failed request may succeed if repeated (or a
// ranged GET resumed): throttling, server errors, and anything that went wrong
// on the wire. A well-formed 4xx answer (403, 404, 412, 416) will not change
// by asking again. Callers check their own contexts first: a cancelled or
// timed-out download is never retried.
func retryable(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, errStalled) || errors.Is(err, errShortBody) {
		return true
	}
	switch apiCode(err) {
	case "SlowDown", "Throttling", "ThrottlingException", "RequestTimeout",
		"InternalError", "ServiceUnavailable", "RequestTimeoutException":
		return true
	}
	if status := httpStatus(err); status != 0 {
		return status >= 500 || status == http.StatusTooManyRequests || status == http.StatusRequestTimeout
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return false
	}
	// No HTTP answer at all, or a body cut short: connection resets and
	// refusals while a server restarts, unexpected EOF, read timeouts.
	return true
}

var (
	errStalled   = errors.New("no data received within part_timeout")
	errShortBody = errors.New("response body shorter than Content-Length")
)
