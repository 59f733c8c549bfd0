package metrics

import "github.com/containerd/errdefs"

// ResultOK is the result label of an operation that succeeded.
const ResultOK = "ok"

// Result is the result label of an operation that returned err: "ok" or
// the errdefs kind, so the label has a handful of values whatever the
// error messages say.
func Result(err error) string {
	switch {
	case err == nil:
		return ResultOK
	case errdefs.IsNotFound(err):
		return "not_found"
	case errdefs.IsAlreadyExists(err):
		return "already_exists"
	case errdefs.IsInvalidArgument(err):
		return "invalid_argument"
	case errdefs.IsFailedPrecondition(err):
		return "failed_precondition"
	case errdefs.IsConflict(err):
		return "conflict"
	case errdefs.IsUnavailable(err):
		return "unavailable"
	case errdefs.IsResourceExhausted(err):
		return "resource_exhausted"
	case errdefs.IsPermissionDenied(err):
		return "permission_denied"
	case errdefs.IsNotImplemented(err):
		return "not_implemented"
	case errdefs.IsCanceled(err):
		return "canceled"
	case errdefs.IsDeadlineExceeded(err):
		return "deadline_exceeded"
	case errdefs.IsAborted(err):
		return "aborted"
	default:
		return "unknown"
	}
}
