package ses

import (
	"sort"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sesv2"
	"github.com/aws/aws-sdk-go-v2/service/sesv2/types"

	"github.com/linkpipe/linkpipe/internal/mail"
)

// What SES needs to report what it did with each email (DESIGN.md
// "Delivery truth"): the configuration set whose event destination
// publishes deliveries, bounces and complaints (to SNS, then SQS, where
// package feedback reads them), and the email tags that name linkpipe's
// mail, link and practice in every such event.

// WithConfigurationSet makes every email name the configuration set
// (LINKPIPE_SES_CONFIGURATION_SET); "" sends without one. It returns s.
func (s *Sender) WithConfigurationSet(name string) *Sender {
	s.configurationSet = name
	return s
}

// feedbackFields sets the configuration set and the EmailTags of in from
// m.Tags (mail.TagMail, mail.TagLink, mail.TagPractice). SES accepts tag
// names and values of ASCII letters, digits, '_' and '-' only: anything
// else is dropped rather than failing the email (linkpipe's ids are of that
// alphabet anyway).
func (s *Sender) feedbackFields(in *sesv2.SendEmailInput, m *mail.Message) {
	if s.configurationSet != "" {
		in.ConfigurationSetName = aws.String(s.configurationSet)
	}
	names := make([]string, 0, len(m.Tags))
	for k, v := range m.Tags {
		if tagSafe(k) && tagSafe(v) {
			names = append(names, k)
		}
	}
	sort.Strings(names)
	for _, k := range names {
		in.EmailTags = append(in.EmailTags, types.MessageTag{Name: aws.String(k), Value: aws.String(m.Tags[k])})
	}
}

// tagSafe reports whether s is a valid SES message tag name or value.
func tagSafe(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
