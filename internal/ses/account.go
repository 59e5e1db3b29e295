package ses

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/service/sesv2"
)

// ErrNoQuota: GetAccount answered without a sending quota.
var ErrNoQuota = errors.New("ses: GetAccount has no SendQuota.MaxSendRate")

// MaxSendRate is the account's sending rate (emails/s) in this region:
// GetAccount's SendQuota.MaxSendRate. It needs ses:GetAccount. Its error
// wraps Classify's sentinel, or ErrNoQuota.
func (s *Sender) MaxSendRate(ctx context.Context) (float64, error) {
	out, err := s.client.GetAccount(ctx, &sesv2.GetAccountInput{})
	if err != nil {
		return 0, fmt.Errorf("ses: get account: %w", Classify(err))
	}
	if out.SendQuota == nil || out.SendQuota.MaxSendRate <= 0 {
		return 0, ErrNoQuota
	}
	return out.SendQuota.MaxSendRate, nil
}
