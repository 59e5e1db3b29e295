package ses

import (
	"net/http"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/sesv2"
)

// IdleConns is an option of New that keeps up to n connections to SES open
// for reuse: one per email in flight. The SDK's client keeps 10 per host,
// so a mailer with more in flight would dial, and shake hands over TLS,
// for nearly every send beyond the tenth; under a paced backlog those
// dials also bunch sends together.
func IdleConns(n int) func(*sesv2.Options) {
	return func(o *sesv2.Options) {
		o.HTTPClient = awshttp.NewBuildableClient().WithTransportOptions(func(t *http.Transport) {
			t.MaxIdleConns = max(t.MaxIdleConns, n)
			t.MaxIdleConnsPerHost = max(t.MaxIdleConnsPerHost, n)
		})
	}
}
