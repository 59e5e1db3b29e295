package config

import (
	"errors"
	"net/url"
	"regexp"
)

// The mailer's delivery-feedback settings (DESIGN.md "Delivery truth").
var (
	SESConfigurationSet = Var{Env: "LINKPIPE_SES_CONFIGURATION_SET",
		Usage: "SES configuration set every email names; its event destination (SNS, then SQS) reports deliveries, bounces and complaints (unset: none)",
		Check: func(s string) error {
			if !configSetName.MatchString(s) {
				return errors.New("must be an SES configuration set name: letters, digits, _ and -, at most 64")
			}
			return nil
		}}
	SESEventsQueueURL = Var{Env: "LINKPIPE_SES_EVENTS_QUEUE_URL",
		Usage: "URL of the SQS queue SES's events reach through SNS; every mailer replica polls it (unset: no feedback)",
		Check: func(s string) error {
			u, err := url.Parse(s)
			if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Path == "" || u.Path == "/" {
				return errors.New("must be an SQS queue URL such as https://sqs.us-east-1.amazonaws.com/123456789012/linkpipe-ses-events")
			}
			return nil
		}}
	AWSEndpointSQS = Var{Env: "AWS_ENDPOINT_URL_SQS", Usage: "SQS endpoint override (SDK setting), e.g. a local queue"}
)

var configSetName = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
