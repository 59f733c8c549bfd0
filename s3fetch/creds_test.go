package s3fetch_test

import (
	"context"

	"github.com/aws/aws-sdk-go-v2/aws"
)

// staticCreds signs requests to the fake, which ignores signatures.
type staticCreds struct{}

func (staticCreds) Retrieve(context.Context) (aws.Credentials, error) {
	return aws.Credentials{AccessKeyID: "fake", SecretAccessKey: "fake", Source: "test"}, nil
}
