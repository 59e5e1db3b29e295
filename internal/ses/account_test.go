package ses_test

import (
	"testing"

	"github.com/linkpipe/linkpipe/internal/ses"
	"github.com/linkpipe/linkpipe/internal/ses/sestest"
)

// account is a GetAccount answer in the shape aws-ses-v2-local validates
// (dist/v2/getAccount.js) and serves from AWS_SES_ACCOUNT.
const account = `{
  "DedicatedIpAutoWarmupEnabled": false,
  "Details": {
    "AdditionalContactEmailAddresses": [], "ContactLanguage": "EN", "MailType": "TRANSACTIONAL",
    "ReviewDetails": {"CaseId": "case-1", "Status": "GRANTED"},
    "UseCaseDescription": "sign-in links", "WebsiteURL": "https://clinic.example"
  },
  "EnforcementStatus": "HEALTHY",
  "ProductionAccessEnabled": true,
  "SendingEnabled": true,
  "SendQuota": {"Max24HourSend": 50000, "MaxSendRate": 14, "SentLast24Hours": 12},
  "SuppressionAttributes": {"SuppressedReasons": ["BOUNCE", "COMPLAINT"]}
}`

func TestMaxSendRateFromGetAccount(t *testing.T) {
	isolate(t)
	t.Setenv("AWS_SES_ACCOUNT", account) // read by the emulator the test starts
	local := sestest.StartLocal(t)
	s, err := ses.New(ctx(t), local.Options())
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.MaxSendRate(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	if r != 14 {
		t.Fatalf("MaxSendRate %v, want the account's 14", r)
	}
}

func TestMaxSendRateWithoutAnAccount(t *testing.T) {
	isolate(t)
	t.Setenv("AWS_SES_ACCOUNT", "")
	local := sestest.StartLocal(t)
	s, err := ses.New(ctx(t), local.Options())
	if err != nil {
		t.Fatal(err)
	}
	// The emulator answers 400 BadRequestException without an account.
	if r, err := s.MaxSendRate(ctx(t)); err == nil || r != 0 {
		t.Fatalf("MaxSendRate = %v, %v; want an error", r, err)
	}
}
