package ami

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/ebs"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
)

// Config selects the AWS account access. Credentials come from the SDK's default chain — environment
// variables, the shared config and credentials files (profiles, SSO), web identity (CI OIDC:
// AWS_ROLE_ARN + AWS_WEB_IDENTITY_TOKEN_FILE), then the instance's metadata service — unless Credentials is
// set.
type Config struct {
	// Profile is a profile of the shared config files (--profile); "": AWS_PROFILE or "default".
	Profile string
	// Region is the region calls go to when no other is named (--region); "": AWS_REGION or the profile's.
	Region string
	// Endpoint, when set, replaces every service's endpoint (tests: internal/awsemu). S3 is then addressed
	// path-style.
	Endpoint string
	// Credentials, when set, replaces the default chain (tests: static keys).
	Credentials aws.CredentialsProvider
	// HTTPClient, when set, sends the requests; by default a client that keeps enough idle connections
	// for the upload's workers.
	HTTPClient *http.Client
}

// LoadConfig resolves c into an aws.Config. It fails when no region can be found; credentials are resolved
// lazily, on the first call that needs them.
func LoadConfig(ctx context.Context, c Config) (aws.Config, error) {
	var opts []func(*config.LoadOptions) error
	if c.Profile != "" {
		opts = append(opts, config.WithSharedConfigProfile(c.Profile))
	}
	if c.Region != "" {
		opts = append(opts, config.WithRegion(c.Region))
	}
	if c.Credentials != nil {
		opts = append(opts, config.WithCredentialsProvider(c.Credentials))
	}
	if c.Endpoint != "" {
		opts = append(opts, config.WithBaseEndpoint(c.Endpoint))
	}
	if c.HTTPClient != nil {
		opts = append(opts, config.WithHTTPClient(c.HTTPClient))
	} else {
		opts = append(opts, config.WithHTTPClient(awshttp.NewBuildableClient().WithTransportOptions(func(t *http.Transport) {
			// The default keeps 10 idle connections per host; 64 upload workers would reconnect constantly.
			t.MaxIdleConns = 256
			t.MaxIdleConnsPerHost = 256
		})))
	}
	cfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return aws.Config{}, fmt.Errorf("load AWS config: %w", err)
	}
	if cfg.Region == "" {
		return aws.Config{}, errors.New("load AWS config: no region: pass --region, set AWS_REGION, or set one in the profile")
	}
	return cfg, nil
}

// clients are one region's service clients, with the SDK's retryer off: call retries.
type clients struct {
	region string
	ec2    *ec2.Client
	ebs    *ebs.Client
	ssm    *ssm.Client
	s3     *s3.Client
}

func newClients(cfg aws.Config, region string) *clients {
	if region == "" {
		region = cfg.Region
	}
	nop := func() aws.Retryer { return aws.NopRetryer{} }
	return &clients{
		region: region,
		ec2:    ec2.NewFromConfig(cfg, func(o *ec2.Options) { o.Region = region; o.Retryer = nop() }),
		ebs:    ebs.NewFromConfig(cfg, func(o *ebs.Options) { o.Region = region; o.Retryer = nop() }),
		ssm:    ssm.NewFromConfig(cfg, func(o *ssm.Options) { o.Region = region; o.Retryer = nop() }),
		s3: s3.NewFromConfig(cfg, func(o *s3.Options) {
			o.Region = region
			o.Retryer = nop()
			o.UsePathStyle = cfg.BaseEndpoint != nil
		}),
	}
}
