// Command demoimage puts the demo's image tarball into an S3 bucket, the
// way an image pipeline would feed the seed's operators: it creates the
// bucket if needed and uploads a generated busybox root filesystem (the
// predecessor's rootfs/ layout, gzip) under the key. Credentials come from
// the AWS SDK's default chain (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).
//
//	go run ./test/e2e/demoimage -endpoint http://127.0.0.1:7070 -bucket demo -key images/demo.tar.gz
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/superfly/flyio-image-manager/internal/tarballgen"
	"github.com/superfly/flyio-image-manager/internal/units"
)

func main() {
	endpoint := flag.String("endpoint", "", "S3 endpoint `URL` (path-style)")
	region := flag.String("region", "us-east-1", "region")
	bucket := flag.String("bucket", "", "bucket, created if missing")
	key := flag.String("key", "images/demo.tar.gz", "object key")
	busybox := flag.String("busybox", "/bin/busybox", "static busybox `BINARY`")
	flag.Parse()
	if err := run(*endpoint, *region, *bucket, *key, *busybox); err != nil {
		fmt.Fprintf(os.Stderr, "demoimage: %v\n", err)
		os.Exit(1)
	}
}

func run(endpoint, region, bucket, key, busybox string) error {
	if endpoint == "" || bucket == "" {
		return errors.New("-endpoint and -bucket are required")
	}
	// Big enough that the progress bar moves for a few seconds in the VM.
	spec := tarballgen.Spec{Seed: 1, Busybox: busybox, SmallFiles: 300, SmallMin: 1 << 10, SmallMax: 8 << 10,
		LargeFiles: 1, LargeSize: 4 << 20, Compression: tarballgen.Gzip, Variant: "demo"}
	var b bytes.Buffer
	sum, err := tarballgen.Write(&b, spec)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion(region))
	if err != nil {
		return err
	}
	cl := s3.NewFromConfig(cfg, func(o *s3.Options) {
		o.BaseEndpoint = aws.String(endpoint)
		o.UsePathStyle = true
	})
	_, err = cl.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &bucket})
	var owned *types.BucketAlreadyOwnedByYou
	if err != nil && !errors.As(err, &owned) {
		return fmt.Errorf("creating bucket %s: %w", bucket, err)
	}
	n := b.Len()
	if _, err := cl.PutObject(ctx, &s3.PutObjectInput{Bucket: &bucket, Key: &key, Body: bytes.NewReader(b.Bytes())}); err != nil {
		return fmt.Errorf("uploading s3://%s/%s: %w", bucket, key, err)
	}
	fmt.Printf("uploaded s3://%s/%s: %s gzip tarball, %d files, %s of content (busybox + generated files)\n",
		bucket, key, units.Bytes(n), sum.Files, units.Bytes(sum.Bytes))
	return nil
}
