package s3fetch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/feature/s3/manager"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go/logging"
)

// Client reads and writes image objects in one bucket. It is safe for
// concurrent use; downloads beyond Config.DownloadQueueSize wait their turn.
type Client struct {
	cfg   Config
	s3    *s3.Client
	queue *Queue
	bufs  sync.Pool // of *[]byte, cap cfg.PartSize, shared by downloads
}

// Option adjusts how New builds the client.
type Option func(*options)

type options struct {
	creds      aws.CredentialsProvider
	httpClient aws.HTTPClient
}

// WithCredentials replaces the SDK default credential chain, e.g. with
// credentials.NewStaticCredentialsProvider in tests.
func WithCredentials(p aws.CredentialsProvider) Option {
	return func(o *options) { o.creds = p }
}

// WithHTTPClient sets the HTTP client used for every request.
func WithHTTPClient(h aws.HTTPClient) Option {
	return func(o *options) { o.httpClient = h }
}

// New builds a client from cfg. Credentials come from the SDK default chain
// (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, shared config and profiles, web
// identity, IMDS) unless WithCredentials is given. No request is made.
func New(ctx context.Context, cfg Config, opts ...Option) (*Client, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	loadOpts := []func(*awsconfig.LoadOptions) error{
		awsconfig.WithRegion(cfg.Region),
		// The SDK's retryer covers everything but GetObject, whose
		// retries resume mid-part and so are done in fetchPart.
		awsconfig.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(so *retry.StandardOptions) {
				so.MaxAttempts = cfg.MaxRetries + 1
				so.MaxBackoff = cfg.RetryMaxDelay.Duration()
				so.RateLimiter = ratelimit.None
			})
		}),
	}
	if o.creds != nil {
		loadOpts = append(loadOpts, awsconfig.WithCredentialsProvider(o.creds))
	}
	if o.httpClient != nil {
		loadOpts = append(loadOpts, awsconfig.WithHTTPClient(o.httpClient))
	}
	// The SDK's own log lines (e.g. "falling back to IMDSv1") would go to
	// stderr, over the dashboard's screen; what matters comes back as
	// errors.
	loadOpts = append(loadOpts, awsconfig.WithLogger(logging.Nop{}))
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, loadOpts...)
	if err != nil {
		return nil, fmt.Errorf("loading AWS configuration for bucket '%s': %w", cfg.Bucket, err)
	}
	if awsCfg.Credentials != nil {
		awsCfg.Credentials = markCredentialErrors{awsCfg.Credentials}
	}
	client := s3.NewFromConfig(awsCfg, func(so *s3.Options) {
		if cfg.Endpoint != "" {
			so.BaseEndpoint = aws.String(cfg.Endpoint)
		}
		so.UsePathStyle = cfg.PathStyle
		// Ranged GETs carry no whole-object checksum and S3-compatible
		// servers differ in trailer support; integrity of image content
		// is checked by digest further up.
		so.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
		so.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	})
	return &Client{cfg: cfg, s3: client, queue: NewQueue(cfg.DownloadQueueSize)}, nil
}

// markCredentialErrors wraps the credential chain's failures in
// credentialsError, so they are reported as ErrNoCredentials.
type markCredentialErrors struct{ aws.CredentialsProvider }

func (m markCredentialErrors) Retrieve(ctx context.Context) (aws.Credentials, error) {
	c, err := m.CredentialsProvider.Retrieve(ctx)
	if err != nil && ctx.Err() == nil {
		err = &credentialsError{err}
	}
	return c, err
}

// needBucket refuses operations while [s3] bucket is unset.
func (c *Client) needBucket() error {
	if c.cfg.Bucket == "" {
		return ErrNoBucket
	}
	return nil
}

// Config returns the configuration the client was built with.
func (c *Client) Config() Config { return c.cfg }

// S3 exposes the underlying SDK client for operations this package does not
// wrap.
func (c *Client) S3() *s3.Client { return c.s3 }

// QueueStats reports downloads active and waiting, for status commands.
func (c *Client) QueueStats() QueueStats { return c.queue.Stats() }

// ObjectInfo describes one stored object.
type ObjectInfo struct {
	Key          string
	Size         int64
	ETag         string
	LastModified time.Time
}

// Stat returns the size and ETag of key (HeadObject).
func (c *Client) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	if err := ValidateKey(key); err != nil {
		return ObjectInfo{}, err
	}
	if err := c.needBucket(); err != nil {
		return ObjectInfo{}, err
	}
	out, err := c.s3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &c.cfg.Bucket, Key: &key})
	if err != nil {
		return ObjectInfo{}, translate("HeadObject", c.cfg.Bucket, key, err)
	}
	return ObjectInfo{
		Key:          key,
		Size:         aws.ToInt64(out.ContentLength),
		ETag:         aws.ToString(out.ETag),
		LastModified: aws.ToTime(out.LastModified),
	}, nil
}

// Exists reports whether key exists. Only "not found" is false without an
// error; access denied and other failures are returned.
func (c *Client) Exists(ctx context.Context, key string) (bool, error) {
	_, err := c.Stat(ctx, key)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, ErrNoSuchKey) {
		return false, nil
	}
	return false, err
}

// List returns every object whose key starts with prefix, following
// pagination.
func (c *Client) List(ctx context.Context, prefix string) ([]ObjectInfo, error) {
	if err := validatePrefix(prefix); err != nil {
		return nil, err
	}
	if err := c.needBucket(); err != nil {
		return nil, err
	}
	var objs []ObjectInfo
	p := s3.NewListObjectsV2Paginator(c.s3, &s3.ListObjectsV2Input{Bucket: &c.cfg.Bucket, Prefix: &prefix})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, translate("ListObjectsV2", c.cfg.Bucket, prefix, err)
		}
		for _, o := range page.Contents {
			objs = append(objs, ObjectInfo{
				Key:          aws.ToString(o.Key),
				Size:         aws.ToInt64(o.Size),
				ETag:         aws.ToString(o.ETag),
				LastModified: aws.ToTime(o.LastModified),
			})
		}
	}
	return objs, nil
}

// Put uploads size bytes from r to key, in parallel multipart uploads of
// Config.PartSize when larger than one part. If r does not deliver exactly
// size bytes the upload is aborted, so a short read never leaves a truncated
// object behind. A negative size skips that check.
func (c *Client) Put(ctx context.Context, key string, r io.Reader, size int64) (ObjectInfo, error) {
	if err := ValidateKey(key); err != nil {
		return ObjectInfo{}, err
	}
	if err := c.needBucket(); err != nil {
		return ObjectInfo{}, err
	}
	partSize := int64(c.cfg.PartSize)
	if partSize < MinPartSize {
		partSize = MinPartSize
	}
	up := manager.NewUploader(c.s3, func(u *manager.Uploader) {
		u.PartSize = partSize
		u.Concurrency = c.cfg.Concurrency
	})
	body := r
	if size >= 0 {
		body = &exactReader{r: r, want: size, key: key}
	}
	out, err := up.Upload(ctx, &s3.PutObjectInput{Bucket: &c.cfg.Bucket, Key: &key, Body: body})
	if err != nil {
		var er *exactReaderError
		if errors.As(err, &er) {
			return ObjectInfo{}, er
		}
		return ObjectInfo{}, translate("PutObject", c.cfg.Bucket, key, err)
	}
	return ObjectInfo{Key: key, Size: size, ETag: aws.ToString(out.ETag)}, nil
}

// exactReader fails the upload when the source is shorter or longer than
// declared.
type exactReader struct {
	r    io.Reader
	want int64
	got  int64
	key  string
}

type exactReaderError struct{ msg string }

func (e *exactReaderError) Error() string { return e.msg }

func (e *exactReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	e.got += int64(n)
	if e.got > e.want {
		return n, &exactReaderError{fmt.Sprintf("upload of %s: source has more than the declared %d bytes", quoteKey(e.key), e.want)}
	}
	if err == io.EOF && e.got < e.want {
		return n, &exactReaderError{fmt.Sprintf("upload of %s: source ended after %d of %d bytes: %v", quoteKey(e.key), e.got, e.want, io.ErrUnexpectedEOF)}
	}
	return n, err
}
